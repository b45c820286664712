"""README: `condaproxy check-config` "prints the effective settings with secrets masked". An
anaconda.org upstream may carry its token in the URL's path (`/t/<token>/`, the form every
conda client uses), and check-config printed that token in full: only `user:password@` was
masked. Every credential an upstream URL can hold is now masked, wherever it sits, in every
channel, and nothing else of the URL (host, path) is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from condaproxy import cli

TOKEN = "xy-1234567890abcdef"
PASSWORD = "pw-0987654321fedcba"
UPSTREAMS = {
    "path token": f"https://conda.anaconda.org/t/{TOKEN}/my-org",
    "path token at the end": f"https://conda.anaconda.org/t/{TOKEN}",
    "path token deeper": f"https://mirror.example/conda/t/{TOKEN}/my-org/label/dev",
    "user and password": f"https://ci:{PASSWORD}@mirror.example/conda/my-org",
    "both": f"https://ci:{PASSWORD}@mirror.example/t/{TOKEN}/my-org",
}


@pytest.mark.parametrize("where", sorted(UPSTREAMS))
def test_check_config_masks_every_credential_an_upstream_url_holds(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream = UPSTREAMS[where]
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n'
        f'[channels.internal]\nupstream = "{upstream}"\n'
        '[channels."team/sub"]\nupstream = "https://conda.anaconda.org/conda-forge"\n'
    )
    assert cli.main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out and PASSWORD not in out, out
    # Host and path are still shown: only the credentials are masked.
    masked = upstream.replace(f"ci:{PASSWORD}@", "***@").replace(f"/t/{TOKEN}", "/t/***")
    assert f'"upstream": "{masked}"' in out, out
    assert '"upstream": "https://conda.anaconda.org/conda-forge"' in out
