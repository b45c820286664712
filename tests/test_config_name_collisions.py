"""Two channels (or tokens) whose names differ only in case or punctuation are one name to the
environment (`CONDAPROXY_CHANNELS__CONDA_FORGE__PRIVATE` is `conda-forge`'s and
`conda_forge`'s): an override meant for one silently set the other, leaving the intended
channel public. Such a pair is refused at start-up with one line naming both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from condaproxy.settings import ConfigError, load_settings
from tests.support.processes import ROOT

# Pairs of names the environment spells the same way.
PAIRS = [
    ("cf", "CF"),
    ("conda-forge", "conda_forge"),
    ("conda-forge", "Conda.Forge"),
    ("team/dev", "team-dev"),
    ("a+b", "a_b"),
]


def _channels(*names: str) -> str:
    return "".join(
        f'[channels."{n}"]\nupstream = "https://up.example/{i}"\n' for i, n in enumerate(names)
    )


def _tokens(*names: str) -> str:
    return "".join(f'[tokens."{n}"]\ntoken = "token-value-{i}-xxxx"\n' for i, n in enumerate(names))


def _refused(tmp_path: Path, text: str, env: dict[str, str]) -> str:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=env)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


@pytest.mark.parametrize("with_override", [False, True], ids=["file", "env-override"])
@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_channels_the_environment_cannot_tell_apart_are_refused(
    tmp_path, first, second, with_override
):
    env = {}
    if with_override:  # meant for the second channel; it used to land on the first
        form = "".join(c if c.isalnum() else "_" for c in second).upper()
        env[f"CONDAPROXY_CHANNELS__{form}__PRIVATE"] = "true"
    message = _refused(tmp_path, _channels(first, second), env)
    assert f"'channels.{first}'" in message and f"'channels.{second}'" in message


@pytest.mark.parametrize(("first", "second"), [("ci", "CI"), ("ci-bot", "ci_bot")])
def test_tokens_the_environment_cannot_tell_apart_are_refused(tmp_path, first, second):
    message = _refused(tmp_path, _channels("team") + _tokens(first, second), {})
    assert f"'tokens.{first}'" in message and f"'tokens.{second}'" in message


def test_distinct_names_still_take_their_own_overrides(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(_channels("conda-forge", "bioconda") + _tokens("ci", "ops"))
    env = {"CONDAPROXY_CHANNELS__CONDA_FORGE__PRIVATE": "true"}
    settings = load_settings(path, environ=env)
    assert settings.channels["conda-forge"].private
    assert not settings.channels["bioconda"].private


def test_check_config_says_it_in_one_line(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(_channels("team", "Team"))
    done = subprocess.run(
        [sys.executable, "-m", "condaproxy", "check-config", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "'channels.team' and 'channels.Team'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
