"""End to end: py-rattler solves and installs through the proxy from a real local upstream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e


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


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
def test_install_through_proxy_then_survive_upstream_outage(
    upstream, start_proxy, tmp_path: Path, sharded: bool
) -> None:
    proxy = start_proxy({"local": {"upstream": upstream.url}}, ttl=0)
    channel = f"{proxy.url}/local"

    first = rattler_install(channel, tmp_path / "a", sharded, "datatool")
    assert first["ok"], first.get("trace")
    installed = {r["name"]: r for r in first["records"]}
    # The dependency closure spans linux-64 and noarch, both package formats.
    assert set(installed) == {"datatool", "libcore", "libzlib", "pyutil"}
    assert installed["datatool"]["version"] == "1.0"
    assert all(r["url"].startswith(channel + "/") for r in first["records"])
    assert (tmp_path / "a/prefix/share/pyutil/0.4.txt").is_file()
    assert (tmp_path / "a/prefix/share/libcore/2.1.txt").is_file()
    stats = upstream.stats()
    used_shards = any("/shards/" in key for key in stats)
    assert used_shards is sharded
    for record in first["records"]:
        path = record["url"].removeprefix(channel)
        assert stats.get(f"GET {path}") == 1, (
            f"{path} fetched upstream {stats.get(f'GET {path}')} times"
        )

    upstream.stop()
    second = rattler_install(channel, tmp_path / "b", sharded, "datatool")
    assert second["ok"], second.get("trace")
    assert {r["name"] for r in second["records"]} == set(installed)
    assert (tmp_path / "b/prefix/share/datatool/1.0.txt").is_file()
    assert any(e.get("cache") == "stale" for e in proxy.events())
