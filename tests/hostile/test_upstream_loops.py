"""A careless operator points a channel's upstream back at the proxy itself (its own address
copied from a client's config, two channels pointing at each other through it, a label of
itself). Each request waited for itself until the upstream read timeout, then answered a 504
"timed out" that named no cause. Now the request that comes back is answered at once (508, to
the proxy only), and the client gets a 502 saying the upstream is the proxy itself. A chain of
two different proxies still works. Real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Proxy, Upstream, free_port, write_config

READ_TIMEOUT = 5  # what a loop used to cost each request (60 by default)
LOOPS: dict[str, Callable[[str], dict[str, dict[str, object]]]] = {
    "itself": lambda me: {"ch": {"upstream": f"{me}/ch"}},
    "through-another-channel": lambda me: {
        "ch": {"upstream": f"{me}/other"},
        "other": {"upstream": f"{me}/ch"},
    },
    "a-label-of-itself": lambda me: {"ch": {"upstream": f"{me}/ch/label/main"}},
    "by-another-address": lambda me: {"ch": {"upstream": me.replace("127.0.0.1", "localhost")}},
}
PATHS = [
    "linux-64/repodata.json",
    "noarch/current_repodata.json",
    "linux-64/libzlib-1.3-h0.conda",
    "channeldata.json",
]


def _start(tmp_path: Path, channels: Callable[[str], dict[str, dict[str, object]]]) -> Proxy:
    port = free_port()
    me = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path / "proxy.toml", tmp_path / "cache", channels(me))
    text = config.read_text().replace("read_timeout = 5", f"read_timeout = {READ_TIMEOUT}")
    config.write_text(text)
    return Proxy(config, port=port).start()


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_an_upstream_that_is_the_proxy_itself_is_a_502_at_once(tmp_path, loop):
    proxy = _start(tmp_path, LOOPS[loop])
    try:
        for path in PATHS:
            started = time.monotonic()
            got = httpx.get(f"{proxy.url}/ch/{path}", timeout=3 * READ_TIMEOUT)
            took = time.monotonic() - started
            assert got.status_code == 502, (path, got.status_code, got.text)
            assert "(a loop" in got.json()["error"], got.text
            assert took < READ_TIMEOUT / 2, (path, took)
        # A shard index that cannot be had is a 404 (clients fall back to repodata.json).
        shards = httpx.get(f"{proxy.url}/ch/linux-64/repodata_shards.msgpack.zst", timeout=30)
        assert shards.status_code == 404
        assert "Traceback" not in proxy.log()
    finally:
        proxy.stop()


def test_a_chain_of_two_proxies_still_works(tmp_path, channel_dir):
    upstream = Upstream(channel_dir).start()
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    inner = _start(tmp_path / "b", lambda _: {"ch": {"upstream": upstream.url}})
    outer = _start(tmp_path / "a", lambda _: {"ch": {"upstream": f"{inner.url}/ch"}})
    try:
        for path in PATHS[:3]:  # the test channel has no channeldata.json
            got = httpx.get(f"{outer.url}/ch/{path}", timeout=30)
            assert got.status_code == 200, (path, got.status_code, got.text)
    finally:
        outer.stop()
        inner.stop()
        upstream.stop()
