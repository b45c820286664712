"""An upstream that redirects to a URL no client can fetch: a port past 65535 (or 0), a broken
IPv6 literal, a control character, a scheme that is not HTTP. httpx, which the origin rules
read URLs with, took `http://host:99999/` for a port; the aiohttp transport's URL parser
raised on it, and the request was a 500 instead of the upstream's 502 (nor was a stale copy
served). Now such a target is refused by the origin rule (rules/origins.py), and any URL the
transport cannot read is the upstream's error: a 502 naming the upstream, or the stale copy.

A raw socket upstream and a real `condaproxy serve`."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator

import pytest

from tests.support.hostile import get_one, http, record
from tests.support.processes import Proxy
from tests.support.raw_upstream import RawUpstream, purge, raw_proxy, whole

pytestmark = pytest.mark.integration

PKG = "b-1.0-0.conda"
DATA = os.urandom(20_000)
REPODATA = json.dumps(
    {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {PKG: record(PKG, DATA)}}
).encode()
LOCATIONS = {
    "port 99999": b"http://127.0.0.1:99999/x",
    "port 65536": b"http://127.0.0.1:65536/x",
    "port 0": b"http://127.0.0.1:0/x",
    "port 99999, same host, relative scheme": b"//127.0.0.1:99999/x",
    "broken IPv6 literal": b"http://[::1/x",
    "control character": b"/x\x01y",
    "file scheme": b"file:///etc/passwd",
    "ftp scheme": b"ftp://127.0.0.1/x",
}


def _redirect(location: bytes, status: bytes) -> Callable[[socket.socket], None]:
    head = b"HTTP/1.1 %s\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (status, location)
    return lambda conn: conn.sendall(head)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Proxy]]:
    with raw_proxy(tmp_path_factory.mktemp("redirects"), ttl=0) as started:
        yield started


@pytest.mark.parametrize("status", [b"302 Found", b"308 Permanent Redirect"])
@pytest.mark.parametrize("location", list(LOCATIONS))
@pytest.mark.parametrize("path", [f"linux-64/{PKG}", "linux-64/repodata.json"])
def test_a_redirect_nowhere_is_the_upstreams_502(
    served: tuple[RawUpstream, Proxy], path: str, location: str, status: bytes
) -> None:
    upstream, proxy = served
    purge(proxy)
    upstream.answers = {"/linux-64/repodata.json": whole(REPODATA), f"/linux-64/{PKG}": whole(DATA)}
    if path.endswith(".conda"):  # its record first, so only the package meets the redirect
        with http() as client:
            assert client.get(f"{proxy.url}/raw/linux-64/repodata.json").status_code == 200
    upstream.answers[f"/{path}"] = _redirect(LOCATIONS[location], status)
    got = get_one(f"{proxy.url}/raw/{path}")
    assert got.status == 502, f"{location}: {got.status} {got.body[:300]!r}"
    assert json.loads(got.body)["upstream"].startswith(upstream.url), got.body


@pytest.mark.parametrize("location", list(LOCATIONS))
def test_a_redirect_nowhere_gives_the_stale_snapshot(
    served: tuple[RawUpstream, Proxy], location: str
) -> None:
    upstream, proxy = served
    purge(proxy)
    upstream.answers = {"/linux-64/repodata.json": whole(REPODATA)}
    url = f"{proxy.url}/raw/linux-64/repodata.json"
    with http() as client:
        assert client.get(url).status_code == 200
        upstream.answers["/linux-64/repodata.json"] = _redirect(LOCATIONS[location], b"302 Found")
        got = client.get(url)
    assert got.status_code == 200 and got.headers["x-cache"] == "STALE", (
        f"{location}: {got.status_code} {got.text[:300]}"
    )
