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

import contextlib
import gzip
import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.hostile import ADMIN_TOKEN, get_one, http, no_crash_in_log, record
from tests.support.processes import Proxy, write_config

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


class RawUpstream:
    """Answers each request from the bytes its `answer` gives, then closes the connection."""

    def __init__(self) -> None:
        self.answer: Callable[[], bytes] = lambda: b""
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            head = b""
            while b"\r\n\r\n" not in head:
                got = conn.recv(65536)
                if not got:
                    return
                head += got
            path = head.split(b" ")[1].decode()
            if path == "/linux-64/repodata.json":
                answer = b"%sContent-Length: %d\r\n\r\n%s" % (OK, len(REPODATA), REPODATA)
            elif path == f"/linux-64/{PKG}":
                answer = self.answer()
            else:
                answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            conn.sendall(answer)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Proxy]]:
    base: Path = tmp_path_factory.mktemp("framing")
    upstream = RawUpstream()
    admin: dict[str, object] = {"token": ADMIN_TOKEN, "roles": {"*": "admin"}}
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"raw": {"upstream": upstream.url}},
        60,
        tokens={"ops": admin},
    )
    proxy = Proxy(config).start()
    try:
        yield upstream, proxy
    finally:
        proxy.stop()
        upstream.sock.close()
    no_crash_in_log(proxy.log())


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_body_longer_than_listed_is_never_a_complete_answer(
    served: tuple[RawUpstream, Proxy], case: str
) -> None:
    upstream, proxy = served
    url = f"{proxy.url}/raw/linux-64/{PKG}"
    with http() as client:
        client.delete(f"{proxy.url}/api/cache", headers={"x-api-key": ADMIN_TOKEN})
    upstream.answer = ANSWERS[case]
    got = get_one(url)
    if got.status == 200 and got.complete:
        assert got.sha256 == hashlib.sha256(DATA).hexdigest(), (
            f"{case}: a complete 200 of {len(got.body)} bytes that are not the listed file"
        )
    else:
        assert got.status in (200, 502), got.status  # cut short, or refused before the body
    upstream.answer = lambda: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    again = get_one(url)
    assert again.status == 502, f"{case}: the body that was longer than listed was kept"
