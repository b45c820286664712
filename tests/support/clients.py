"""Real conda clients driven from tests: py-rattler solving and installing in a subprocess
(see rattler_client.py for why a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT


def rattler_install(channel_url: str, workdir: Path, sharded: bool, *specs: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.rattler_client",
            channel_url,
            str(workdir / "prefix"),
            str(workdir / "client-cache"),
            "1" if sharded else "0",
            *specs,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"client printed nothing; stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])
