"""Cached metadata changed on disk while the proxy was stopped (a crash before writeback, bit
rot, a stray hand): after the restart, no client gets the changed bytes. Every variant file of
a snapshot from before the start is checked against its sha256 once; one that fails is
dropped and fetched again from the upstream, or, with the upstream down, is a 502/503 naming
it, never served. Untouched copies are served as before, without an upstream request.

Real processes: the test upstream (the sharded test channel) and `condaproxy serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PATHS = (
    "linux-64/repodata.json",
    "linux-64/repodata.json.zst",
    "noarch/repodata.json",
    "linux-64/repodata_shards.msgpack.zst",
)


@pytest.fixture
def upstream(channel_dir: Path) -> Iterator[Upstream]:
    server = Upstream(channel_dir).start()
    yield server
    server.stop()


def fetch_all(proxy: Proxy) -> dict[str, bytes]:
    got = {}
    with httpx.Client(timeout=30) as client:
        for path in PATHS:
            response = client.get(f"{proxy.url}/ch/{path}", headers={"accept-encoding": "identity"})
            assert response.status_code == 200, (path, response.text)
            got[path] = response.content
    return got


def metadata_files(cache: Path) -> list[Path]:
    return [p for p in (cache / "meta").rglob("*") if p.is_file()]


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def start(config: Path) -> Proxy:
    return Proxy(config).start()


def filled_then_stopped(tmp_path: Path, upstream: Upstream) -> tuple[Path, Path, dict[str, bytes]]:
    """A proxy's config and cache, and what it served before it was stopped."""
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "proxy.toml", cache, {"ch": {"upstream": upstream.url}}, 600)
    proxy = start(config)
    before = fetch_all(proxy)
    proxy.stop()
    return config, cache, before


def upstream_gets(upstream: Upstream) -> int:
    return sum(n for k, n in upstream.stats().items() if k.startswith("GET "))


@pytest.mark.parametrize("damage", ["flip a byte", "zero the file, same size"])
def test_metadata_changed_at_rest_is_refetched_never_served(
    tmp_path: Path, upstream: Upstream, damage: str
) -> None:
    config, cache, before = filled_then_stopped(tmp_path, upstream)
    files = metadata_files(cache)
    assert files, "the proxy kept no metadata files"
    for path in files:
        if damage == "flip a byte":
            flip_one_byte(path)
        else:
            path.write_bytes(bytes(path.stat().st_size))
    proxy = start(config)
    try:
        requests_before = upstream_gets(upstream)
        after = fetch_all(proxy)
        assert after == before
        assert upstream_gets(upstream) > requests_before, "changed copies were not refetched"
        assert "cached metadata damaged on disk" in proxy.log()
    finally:
        proxy.stop()
    no_crash_in_log(proxy.log())


def test_untouched_metadata_is_served_after_a_restart_without_upstream_requests(
    tmp_path: Path, upstream: Upstream
) -> None:
    config, _, before = filled_then_stopped(tmp_path, upstream)
    proxy = start(config)
    try:
        requests_before = upstream_gets(upstream)
        assert fetch_all(proxy) == before
        assert upstream_gets(upstream) == requests_before
    finally:
        proxy.stop()


def test_with_the_upstream_down_a_changed_copy_is_an_error_not_bytes(
    tmp_path: Path, upstream: Upstream
) -> None:
    config, cache, before = filled_then_stopped(tmp_path, upstream)
    good = before["linux-64/repodata.json.zst"]
    for path in metadata_files(cache):
        flip_one_byte(path)
    upstream.stop()
    proxy = start(config)
    try:
        got = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json.zst", timeout=30)
        assert got.status_code in (502, 503, 504), got.status_code
        assert got.headers["content-type"] == "application/json"
        assert got.content != good
        assert "error" in got.json()
    finally:
        proxy.stop()
