"""The README's policy example and the shipped proxy.toml's commented block are valid config
meaning what the README says."""

from __future__ import annotations

import re
from pathlib import Path

from condaproxy.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_policy_example_loads_as_documented(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Supply-chain policy", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    config = tmp_path / "proxy.toml"
    config.write_text(block[1])
    rules = load_settings(config, environ={}).policy_rules()
    assert rules.cooldown.seconds == 7 * 86400
    assert rules.channels["conda-forge"].seconds == 3 * 86400
    assert [s.text for s in rules.deny][:2] == ["evil-pkg", "numpy 1.26.0 *_1"]
    python = {"name": "python", "version": "3.13.1", "build": "h0"}
    age, key = rules.age_for("conda-forge", python)
    assert age.seconds == 86400 and key == 'policy.exempt."python 3.13.*"'
    assert rules.decide("conda-forge", {"name": "openssl", "version": "3"}, 100.0, 100.0) is None


def test_the_shipped_config_shows_the_policy_block_commented(tmp_path: Path) -> None:
    shipped = (ROOT / "proxy.toml").read_text()
    lines = [line[2:] for line in shipped.splitlines() if line.startswith("# ")]
    start = lines.index("[policy]")
    block = "\n".join(lines[start : start + 6])
    config = tmp_path / "proxy.toml"
    config.write_text(block + "\n")
    assert load_settings(config, environ={}).policy_rules().cooldown.seconds == 7 * 86400
    settings = load_settings(ROOT / "proxy.toml", environ={})
    assert not any(settings.policy_rules().active(n) for n in settings.channels)  # off
