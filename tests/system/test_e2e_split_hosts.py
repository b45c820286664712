"""End to end: the channel's metadata lives on one host and points (CEP-15 `base_url`, CEP-16
`base_url`/`shards_base_url`) at packages and shards on another host, as prefix.dev does.
Clients still fetch everything through the proxy, which fetches from the right host."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.channel import split_channel
from tests.support.clients import rattler_install
from tests.support.processes import Upstream

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
def test_packages_on_another_host_still_come_through_the_proxy(
    channel_dir: Path, start_proxy, tmp_path: Path, sharded: bool
) -> None:
    meta = Upstream(tmp_path / "meta")
    cdn = Upstream(tmp_path / "cdn")
    split_channel(channel_dir, meta.directory, cdn.directory, cdn.url)
    meta.start()
    cdn.start()
    try:
        proxy = start_proxy({"split": {"upstream": meta.url}})
        result = rattler_install(f"{proxy.url}/split", tmp_path / "client", sharded, "datatool")
        assert result["ok"], result.get("trace")
        assert all(r["url"].startswith(f"{proxy.url}/split/") for r in result["records"])
        cdn_stats = cdn.stats()
        for record in result["records"]:
            path = record["url"].removeprefix(f"{proxy.url}/split")
            assert cdn_stats.get(f"GET {path}") == 1, f"{path} did not come from the CDN host"
        assert all("/shards/" in k for k in cdn_stats if "/shards/" in k)
        assert any("/shards/" in k for k in cdn_stats) is sharded
        assert not any(k.endswith((".conda", ".tar.bz2")) for k in meta.stats())
    finally:
        meta.stop()
        cdn.stop()
