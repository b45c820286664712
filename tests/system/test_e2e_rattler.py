"""End to end: py-rattler solves and installs through the proxy from a real local upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clients import rattler_install

pytestmark = pytest.mark.e2e


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
