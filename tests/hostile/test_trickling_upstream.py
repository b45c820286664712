"""An upstream that trickles a body: one byte at a time, each inside `upstream.read_timeout`,
so no read ever times out. Metadata is answered once its whole body is in, and its refresh
holds the subdir's lock, so without a bound every client of that subdir waited as long as the
upstream liked, a cached copy in hand (a client gave up after 40 s). A body must keep a
minimum pace (rules/pace.py): a trickle is a 504 naming the upstream within about two read
timeouts, or the stale copy, the lock is free again for the next request, and a trickled
package is cut for its client and never kept.

Real processes: the test upstream and `condaproxy serve` with a 2 s read timeout."""

from __future__ import annotations

import hashlib
import json
import os
import time

import httpx
import msgpack
import pytest
import zstandard

from tests.support.hostile import ZST, HostileSetup, get_one

pytestmark = pytest.mark.integration

READ_TIMEOUT = 2
TTL = 1
PKG = "linux-64/small-1.0-0.conda"
DATA = os.urandom(8192)
SHARDS = zstandard.ZstdCompressor().compress(
    msgpack.packb({"version": 1, "info": {"subdir": "linux-64"}, "shards": {}})
)
REPODATA = json.dumps(
    {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}, "pad": "x" * 400}
).encode()
METADATA = {
    "repodata.json": ("linux-64/repodata.json", REPODATA),
    "shard index": ("linux-64/repodata_shards.msgpack.zst", SHARDS),
    "channeldata.json": ("channeldata.json", json.dumps({"pad": "x" * 400}).encode()),
}
PACES = [0.2, 1.0]  # seconds between bytes: 5 and 1 bytes a second, each inside the timeout


class Setup(HostileSetup):
    def timed(self, path: str) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = self.client.get(f"{self.proxy.url}/ch/{path}")
        return response, time.monotonic() - started

    def stop_upstream(self) -> None:
        assert self.upstream.proc is not None
        self.upstream.proc.kill()  # it trickles on to closed sockets for minutes
        self.upstream.proc.wait(10)


# Only the plain JSON exists upstream (ZST): the trickled body is the one the proxy takes.
setup = Setup.fixture(
    "trickle",
    {PKG: DATA},
    ttl=TTL,
    env={"CONDAPROXY_UPSTREAM_READ_TIMEOUT": str(READ_TIMEOUT)},
    missing=ZST,
    timeout=60,
)


@pytest.mark.parametrize("pace", PACES)
@pytest.mark.parametrize("what", list(METADATA))
def test_trickled_metadata_with_nothing_cached_is_a_504_and_frees_the_lock(
    setup: Setup, what: str, pace: float
) -> None:
    path, body = METADATA[what]
    setup.fresh()
    setup.upstream.override(f"/{path}", body, trickle=pace)
    r, took = setup.timed(path)
    # A shard index that cannot be had is a 404, so clients fall back to repodata.json.
    assert r.status_code == (404 if path.endswith(".msgpack.zst") else 504), r.text
    assert f"{setup.upstream.url}/{path}" in r.json()["error"]
    assert "slower than" in r.json()["error"]
    assert took < 2 * READ_TIMEOUT + 2, f"answered after {took:.1f} s"
    # The lock is free: the upstream answering again answers the next client at once.
    setup.upstream.override(f"/{path}", body)
    r, took = setup.timed(path)
    assert r.status_code == 200, r.text
    assert took < 2


@pytest.mark.parametrize("what", ["repodata.json", "channeldata.json"])
def test_a_trickled_revalidation_serves_the_stale_copy(setup: Setup, what: str) -> None:
    path, body = METADATA[what]
    setup.fresh()
    setup.upstream.override(f"/{path}", body)
    first = setup.client.get(f"{setup.proxy.url}/ch/{path}")
    assert first.status_code == 200
    time.sleep(TTL + 0.1)
    setup.upstream.override(f"/{path}", body.replace(b"x", b"y"), trickle=0.5)
    r, took = setup.timed(path)
    assert r.status_code == 200
    assert r.headers["x-cache"] == "STALE"
    assert r.content == first.content
    assert took < 2 * READ_TIMEOUT + 2, f"answered after {took:.1f} s"


def test_a_trickled_package_is_cut_and_never_kept(setup: Setup) -> None:
    setup.fresh()
    setup.upstream.override(f"/{PKG}", DATA, trickle=0.2)
    started = time.monotonic()
    got = get_one(f"{setup.proxy.url}/ch/{PKG}", timeout=60)
    assert not (got.complete and got.body == DATA), "a trickled body was completed"
    assert time.monotonic() - started < 2 * READ_TIMEOUT + 2
    setup.upstream.reset()
    again = get_one(f"{setup.proxy.url}/ch/{PKG}")
    assert again.status == 200 and again.complete
    assert hashlib.sha256(again.body).hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert setup.upstream.count("GET", f"/{PKG}") == 1, "the cut body was kept"


@pytest.mark.parametrize("what", ["repodata.json", "channeldata.json"])
def test_a_body_that_starts_late_then_flows_is_no_trickle(setup: Setup, what: str) -> None:
    """The wait for the first byte is the read timeout's alone (an upstream making the body)."""
    path, body = METADATA[what]
    setup.fresh()
    wait = READ_TIMEOUT - 0.3  # each inside the read timeout; together longer than it
    setup.upstream.override(f"/{path}", body, delay=wait, pause_after=[1, wait])
    r = setup.client.get(f"{setup.proxy.url}/ch/{path}", headers={"accept-encoding": "identity"})
    assert r.status_code == 200, r.text
    assert r.content == body
