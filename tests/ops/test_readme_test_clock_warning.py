"""README: "The configuration cannot silently weaken the proxy". `policy.test_clock_file` (a
hook for the end-to-end policy tests) moves the policy's clock by what a file holds; set in
production it would let whoever writes that file end every cooldown, so check-config names it
as a warning instead of passing it in silence."""

from __future__ import annotations

from pathlib import Path

import pytest

from condaproxy.cli import main


def test_check_config_warns_about_the_test_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n[policy]\ncooldown = "7d"\n'
        f'test_clock_file = "{tmp_path / "clock"}"\n'
        '[channels.cf]\nupstream = "https://conda.anaconda.org/conda-forge"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    assert "warning: policy.test_clock_file is set" in capsys.readouterr().err


def test_no_warning_without_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n[policy]\ncooldown = "7d"\n'
        '[channels.cf]\nupstream = "https://conda.anaconda.org/conda-forge"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    assert "test_clock_file" not in capsys.readouterr().err
