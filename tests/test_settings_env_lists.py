"""Lists from the environment: comma-separated, or a TOML array when an item holds a comma
(a match spec such as `numpy >=1.2,<2` would otherwise be cut in two)."""

from pathlib import Path

import pytest

from condaproxy.settings import ConfigError, load_settings


def settings_with(tmp_path: Path, deny: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "proxy.toml"
    config.write_text('[channels.cf]\nupstream = "https://x.example/cf"\n')
    return load_settings(config, environ={"CONDAPROXY_POLICY_DENY": deny})


def test_a_toml_array_keeps_match_specs_with_commas_whole(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, '["numpy >=1.2,<2", "evil"]')
    assert list(settings.policy.deny) == ["numpy >=1.2,<2", "evil"]


def test_a_comma_separated_list_still_works(tmp_path: Path) -> None:
    assert list(settings_with(tmp_path, "evil, bad-pkg").policy.deny) == ["evil", "bad-pkg"]


@pytest.mark.parametrize("text", ['["numpy >=1.2,<2"', "[1, 2]"])
def test_a_broken_array_names_the_variable(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="CONDAPROXY_POLICY_DENY"):
        settings_with(tmp_path, text)
