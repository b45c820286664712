"""Byte ranges asked while the file is still arriving from upstream (a miss other clients
joined), against a real proxy: prefix, suffix, open and unsatisfiable ranges, as GET and as
HEAD. A joined client gets exactly the bytes it asked for, and an unsatisfiable range is the
same 416 a hit answers: `Content-Range: bytes */<size>` and an empty body it says is empty
(it was a chunked nothing to a GET and no length at all to a HEAD)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.hostile import listed_channel
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/slowtool-1.0-0.conda"
BYTES = bytes(range(256)) * 40  # 10240 bytes
SIZE = len(BYTES)
ADMIN = "admin-token-24680"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Upstream]]:
    base = tmp_path_factory.mktemp("ranges-in-flight")
    upstream = Upstream(listed_channel(base / "channel", {PACKAGE: BYTES})).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}},
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
    )
    proxy = Proxy(config).start()
    yield proxy, upstream
    proxy.stop()
    upstream.stop()


def in_flight(
    setup: tuple[Proxy, Upstream], method: str, headers: dict[str, str]
) -> httpx.Response:
    """`method` with `headers` while a first client's download of the package is paused
    upstream after its first kilobyte."""
    proxy, upstream = setup
    httpx.delete(f"{proxy.url}/api/cache/pub", headers={"x-api-key": ADMIN}).raise_for_status()
    upstream.override(f"/{PACKAGE}", BYTES, pause_after=[1024, 1.5])
    first = threading.Thread(target=httpx.get, args=(f"{proxy.url}/pub/{PACKAGE}",))
    first.start()
    try:
        time.sleep(0.5)  # the download is under way, its rest held upstream
        return httpx.request(method, f"{proxy.url}/pub/{PACKAGE}", headers=headers, timeout=20)
    finally:
        first.join()
        upstream.reset()


SATISFIABLE = {
    "prefix": ("bytes=0-99", 0, 100),
    "inside-the-held-part": ("bytes=5000-5099", 5000, 5100),
    "open": ("bytes=10000-", 10000, SIZE),
    "suffix": ("bytes=-10", SIZE - 10, SIZE),
    "past-the-end": ("bytes=10200-99999", 10200, SIZE),
}


@pytest.mark.parametrize("spec", SATISFIABLE.values(), ids=SATISFIABLE.keys())
def test_a_joined_client_gets_exactly_the_range_it_asked(setup, spec):
    header, start, end = spec
    got = in_flight(setup, "GET", {"range": header})
    assert got.status_code == 206, got.text
    assert got.headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert got.content == BYTES[start:end]


UNSATISFIABLE = ["bytes=10240-", "bytes=99999-", "bytes=-0"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("header", UNSATISFIABLE)
def test_an_unsatisfiable_range_in_flight_is_the_416_a_hit_answers(setup, method, header):
    joined = in_flight(setup, method, {"range": header})
    proxy, _ = setup
    httpx.get(f"{proxy.url}/pub/{PACKAGE}").raise_for_status()  # cached now
    hit = httpx.request(method, f"{proxy.url}/pub/{PACKAGE}", headers={"range": header})
    for answer in (joined, hit):
        assert answer.status_code == 416
        assert answer.headers["content-range"] == f"bytes */{SIZE}"
        assert answer.headers.get("content-length") == "0", answer.headers
        assert "transfer-encoding" not in answer.headers
        assert answer.content == b""
