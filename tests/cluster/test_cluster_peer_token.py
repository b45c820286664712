"""README: `peer_token` is "shared by the replicas, 16+ characters" and "reads every channel
through the ordinary routes". The length was only checked beside `peer_url`: a replica with a
peer token and no peer URL of its own (or one whose peer URL comes later) accepted a 3-letter
token that read every private channel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

SHORT = "abc123"


@pytest.mark.parametrize(
    "source",
    ["file", "override"],
)
def test_a_short_peer_token_is_refused_even_without_a_peer_url(tmp_path: Path, source: str) -> None:
    config = tmp_path / "proxy.toml"
    token_line = f'peer_token = "{SHORT}"\n' if source == "file" else ""
    config.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n[storage]\nurl = "s3://bucket-one"\n'
        f"[cluster]\npoll_interval = 1\n{token_line}"
        '[channels.team]\nupstream = "http://127.0.0.1:2"\nprivate = true\n'
    )
    env = {"CONDAPROXY_CLUSTER_PEER_TOKEN": SHORT} if source == "override" else {}
    done = subprocess.run(
        [sys.executable, "-m", "condaproxy", "check-config", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert done.returncode == 2, done.stdout[-1500:]
    assert "'cluster.peer_token'" in done.stderr and "16 characters" in done.stderr
    assert SHORT not in done.stderr + done.stdout


def test_a_long_peer_token_without_a_peer_url_still_loads(tmp_path: Path) -> None:
    from condaproxy.settings import load_settings

    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path}"\n[storage]\nurl = "s3://bucket-one"\n'
        f'[cluster]\npeer_token = "{"p" * 16}"\n'
    )
    assert "cluster-peer" in load_settings(config, {}).tokens
