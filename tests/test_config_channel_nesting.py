"""Channel names may hold slashes, and a path goes to the longest configured name that
prefixes it. A channel named `team/label/dev` beside `team` silently took every client of
team's `dev` label (and `team/linux-64` would take team's subdir): whichever was meant, the
config is refused at start-up, naming both. Names that only share a prefix stay usable."""

from __future__ import annotations

from pathlib import Path

import pytest

from condaproxy.settings import ConfigError, load_settings


def _config(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        "".join(
            f'[channels."{n}"]\nupstream = "https://up.example/{i}"\n' for i, n in enumerate(names)
        )
    )
    return path


@pytest.mark.parametrize(
    ("outer", "inner"),
    [
        ("team", "team/label/dev"),
        ("team", "team/label/main/more"),
        ("team", "team/linux-64"),
        ("team", "team/noarch"),
        ("team", "team/osx-arm64/x"),
        ("team", "team/shards"),
        ("team", "team/channeldata.json"),
        ("org/team", "org/team/label/rc"),
    ],
)
@pytest.mark.parametrize("order", ["outer-first", "inner-first"])
def test_a_channel_taking_over_another_channels_routes_is_refused(tmp_path, outer, inner, order):
    names = (outer, inner) if order == "outer-first" else (inner, outer)
    with pytest.raises(ConfigError) as info:
        load_settings(_config(tmp_path, *names), environ={})
    message = str(info.value)
    assert f"'channels.{outer}'" in message and f"'channels.{inner}'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "names",
    [
        ("team", "team/dev"),  # beside team's routes, not over them
        ("team", "teamwork/label/dev"),  # not under team at all
        ("team/label/dev",),  # alone it shadows nothing
        ("conda-forge", "conda-forge/gpu"),
    ],
)
def test_channels_that_only_share_a_prefix_load(tmp_path, names):
    settings = load_settings(_config(tmp_path, *names), environ={})
    assert set(settings.channels) == set(names)
