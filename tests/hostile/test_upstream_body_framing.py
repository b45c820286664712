"""An upstream that frames a listed package's body without Content-Length (chunked, or ended by
closing the connection) and sends more bytes than the channel lists. No size was announced to
compare before the body started, and a reader of the download sends all it has received but
its last byte: the client got a complete 200 of the listed size holding the wrong bytes (the
proxy sent the listed Content-Length, then the first bytes of a longer body), the check failing
only after it had everything. Now the body is never read past the listed size: the chunk that
would pass it fails the download, so every client's transfer is cut and nothing is kept.

A raw socket upstream (the framing is the attack; an HTTP server library would fix it up) and
a real `condaproxy serve`."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator

import pytest

from tests.support.hostile import get_one, record
from tests.support.processes import Proxy
from tests.support.raw_upstream import RawUpstream, purge, raw_proxy, whole

pytestmark = pytest.mark.integration

PKG = "b-1.0-0.conda"
DATA = os.urandom(200_000)
REPODATA = json.dumps(
    {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {PKG: record(PKG, DATA)}}
).encode()
OK = b"HTTP/1.1 200 OK\r\n"


def _chunked(*pieces: bytes, te: bytes = b"chunked") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return OK + b"Transfer-Encoding: " + te + b"\r\n\r\n" + body + b"0\r\n\r\n"


def _longer() -> bytes:
    return os.urandom(len(DATA) + 1000)


# name -> the whole answer to a GET of the package (made per request)
ANSWERS: dict[str, Callable[[], bytes]] = {
    "chunked, longer, other bytes": lambda: _chunked(_longer()),
    "chunked, longer, in small chunks": lambda: _chunked(
        *(lambda b: [b[i : i + 4096] for i in range(0, len(b), 4096)])(_longer())
    ),
    "chunked, the listed bytes then more": lambda: _chunked(DATA[:100_000], DATA[100_000:], b"x"),
    "chunked, one byte more at the end": lambda: _chunked(_longer()[: len(DATA)], b"!"),
    "closed connection ends it, longer": lambda: b"HTTP/1.0 200 OK\r\n\r\n" + _longer(),
    "HTTP/1.1 without length, closed, longer": (
        lambda: OK + b"Connection: close\r\n\r\n" + _longer()
    ),
    "transfer-encoding gzip, chunked": lambda: _chunked(
        gzip.compress(DATA + os.urandom(1000)), te=b"gzip, chunked"
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Proxy]]:
    with raw_proxy(tmp_path_factory.mktemp("framing")) as started:
        yield started


def _send(case: str) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(ANSWERS[case]())


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_body_longer_than_listed_is_never_a_complete_answer(
    served: tuple[RawUpstream, Proxy], case: str
) -> None:
    upstream, proxy = served
    url = f"{proxy.url}/raw/linux-64/{PKG}"
    purge(proxy)
    upstream.answers = {"/linux-64/repodata.json": whole(REPODATA), f"/linux-64/{PKG}": _send(case)}
    got = get_one(url)
    if got.status == 200 and got.complete:
        assert got.sha256 == hashlib.sha256(DATA).hexdigest(), (
            f"{case}: a complete 200 of {len(got.body)} bytes that are not the listed file"
        )
    else:
        assert got.status in (200, 502), got.status  # cut short, or refused before the body
    busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    upstream.answers[f"/linux-64/{PKG}"] = lambda conn: conn.sendall(busy)
    again = get_one(url)
    assert again.status == 502, f"{case}: the body that was longer than listed was kept"
