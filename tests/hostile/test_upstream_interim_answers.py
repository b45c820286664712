"""An upstream that accepts the request and answers with interim 1xx heads (`100 Continue`,
`103 Early Hints`), or its head a byte at a time, but never a whole final head. The read
timeout bounds each wait for bytes: aiohttp stops its read timer once an interim answer is
parsed, and each trickled byte restarts it, so the proxy waited for as long as the upstream
kept the connection open, and its client (and every client joined to the download or the
revalidation) got no answer at all, not the 504 naming the upstream. Now the whole head must
arrive within connect_timeout + read_timeout: a 504 naming the upstream, or the stale copy.

A raw socket upstream (an HTTP server library would not send such heads) and a real
`condaproxy serve` (upstream.connect_timeout 2 s, read_timeout 5 s)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.hostile import http, record
from tests.support.processes import Proxy
from tests.support.raw_upstream import RawUpstream, purge, raw_proxy, whole

pytestmark = pytest.mark.integration

PKG = "b-1.0-0.conda"
DATA = os.urandom(20_000)
REPODATA = json.dumps(
    {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {PKG: record(PKG, DATA)}}
).encode()
DEADLINE = 2 + 5  # connect_timeout + read_timeout in tests/support/processes.write_config
HOLD = 40  # how long each hostile answer keeps the connection open


def _then_silence(head: bytes) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.sendall(head)
        time.sleep(HOLD)

    return answer


def _continues(conn: socket.socket) -> None:
    for _ in range(HOLD):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(1)


def _head_trickle(conn: socket.socket) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Pad: " + b"a" * 80
    for i in range(len(head)):
        conn.sendall(head[i : i + 1])
        time.sleep(0.5)


ANSWERS: dict[str, Callable[[socket.socket], None]] = {
    "100 Continue, then nothing": _then_silence(b"HTTP/1.1 100 Continue\r\n\r\n"),
    "103 Early Hints, then nothing": _then_silence(
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
    ),
    "a 100 Continue every second": _continues,
    "the head a byte every half second": _head_trickle,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Proxy]]:
    # repodata_ttl 0: every request revalidates the repodata
    with raw_proxy(tmp_path_factory.mktemp("interim"), ttl=0) as started:
        yield started


def _fresh(upstream: RawUpstream, proxy: Proxy) -> None:
    purge(proxy)
    upstream.answers = {"/linux-64/repodata.json": whole(REPODATA), f"/linux-64/{PKG}": whole(DATA)}


@pytest.mark.parametrize("case", list(ANSWERS))
@pytest.mark.parametrize("path", [f"linux-64/{PKG}", "linux-64/repodata.json"])
def test_a_head_that_never_completes_is_a_504_naming_the_upstream(
    served: tuple[RawUpstream, Proxy], case: str, path: str
) -> None:
    upstream, proxy = served
    _fresh(upstream, proxy)
    if path.endswith(".conda"):  # its record first, so only the package meets the answer
        with http() as client:
            assert client.get(f"{proxy.url}/raw/linux-64/repodata.json").status_code == 200
    upstream.answers[f"/{path}"] = ANSWERS[case]
    started = time.monotonic()
    with http(timeout=DEADLINE + 20) as client:
        got = client.get(f"{proxy.url}/raw/{path}")
    took = time.monotonic() - started
    assert got.status_code == 504, f"{case}: {got.status_code} {got.text[:300]}"
    assert got.json()["upstream"].startswith(upstream.url), got.text
    assert took < DEADLINE + 4, f"{case}: answered after {took:.1f}s"


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_head_that_never_completes_gives_the_stale_snapshot(
    served: tuple[RawUpstream, Proxy], case: str
) -> None:
    upstream, proxy = served
    _fresh(upstream, proxy)
    url = f"{proxy.url}/raw/linux-64/repodata.json"
    with http(timeout=DEADLINE + 20) as client:
        assert client.get(url).status_code == 200
        upstream.answers["/linux-64/repodata.json"] = ANSWERS[case]
        started = time.monotonic()
        got = client.get(url, headers={"accept-encoding": "identity"})
        took = time.monotonic() - started
    assert got.status_code == 200 and got.headers["x-cache"] == "STALE", got.status_code
    assert json.loads(got.content)["packages.conda"][PKG]["size"] == len(DATA)
    assert took < DEADLINE + 4, f"{case}: answered after {took:.1f}s"
