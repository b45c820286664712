"""A client that never finishes its request's head, against a real proxy: a header (or a path,
or a query, or thousands of fields) that grows without end, and connections that send nothing
or their head a byte at a time (slowloris). Each would hold the proxy's memory or one of its
file descriptors for as long as the client liked; the proxy bounds both (web/connection.py):
a head over 64 KiB is a 431 and the connection closed, a head not complete within
`server.header_timeout` is a 408 (or, if nothing was sent, a closed connection).

What takes long legitimately is not cut: a response that takes longer than the timeout to
start, a keep-alive connection between requests, pipelined requests, big ordinary heads."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import listed_channel, no_crash_in_log, read_until_closed
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

TIMEOUT = 2  # server.header_timeout in this test
LIMIT = 64 * 1024
SLOW = b"slow package " * 100
PACKAGE = "linux-64/slow-1.0-0.conda"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Upstream]]:
    base = tmp_path_factory.mktemp("request-heads")
    upstream = Upstream(listed_channel(base / "channel", {PACKAGE: SLOW})).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}, "priv": {"upstream": upstream.url, "private": True}},
        extra=f"[server]\nheader_timeout = {TIMEOUT}\n",
    )
    started = Proxy(config).start()
    yield started, upstream
    started.stop()
    upstream.stop()


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT + 10)


def feed(sock: socket.socket, start: bytes, piece: bytes, most: int) -> int:
    """Send `start`, then `piece` again and again up to `most` bytes or until the proxy
    stops taking them; how many bytes it took."""
    sent = 0
    try:
        sock.sendall(start)
        sent = len(start)
        while sent < most:
            sock.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


ENDLESS = {
    "one-header-value": (
        b"GET /pub/noarch/repodata.json HTTP/1.1\r\nHost: x\r\nX-A: ",
        b"a" * 4096,
    ),
    "many-fields": (b"GET /pub/noarch/repodata.json HTTP/1.1\r\nHost: x\r\n", b"X-B: b\r\n" * 512),
    "path": (b"GET /pub/noarch/", b"a" * 4096),
    "query": (b"GET /pub/noarch/repodata.json?q=", b"b" * 4096),
    "token-header": (b"GET /priv/noarch/repodata.json HTTP/1.1\r\nX-API-Key: ", b"c" * 4096),
    "status-page": (b"GET / HTTP/1.1\r\nHost: x\r\nCookie: ", b"d" * 4096),
}


@pytest.mark.parametrize("shape", ENDLESS, ids=list(ENDLESS))
def test_a_request_head_that_grows_without_end_is_a_431_near_the_limit(
    proxy: tuple[Proxy, Upstream], shape: str
) -> None:
    started, _ = proxy
    before = len(started.log())
    start, piece = ENDLESS[shape]
    with connect(started) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        taken = feed(sock, start, piece, 64 << 20)
        got = read_until_closed(sock)
    # Held: at most the limit and a read or two more (and what socket buffers keep).
    assert taken < 8 << 20, f"the proxy took {taken} bytes of a head and kept reading"
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert b'"status": 431' in got
    no_crash_in_log(started.log()[before:])


@pytest.mark.parametrize("size", [LIMIT + 512, 4 * LIMIT, 32 * LIMIT])
def test_a_whole_oversized_head_in_one_write_is_a_431_and_never_reaches_the_app(
    proxy: tuple[Proxy, Upstream], size: int
) -> None:
    started, _ = proxy
    before = len(started.log())
    fields = b"".join(b"X-G%d: %s\r\n" % (i, b"g" * 90) for i in range(size // 96 + 1))
    with connect(started) as sock:
        sock.sendall(f"GET /pub/{PACKAGE} HTTP/1.1\r\nHost: x\r\n".encode() + fields + b"\r\n")
        got = read_until_closed(sock)
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert PACKAGE not in started.log()[before:]  # no request event: the app never saw it
    no_crash_in_log(started.log()[before:])


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    proxy: tuple[Proxy, Upstream],
) -> None:
    started, _ = proxy
    with connect(started) as sock:
        opened = time.monotonic()
        got = read_until_closed(sock)
        held = time.monotonic() - opened
    assert got == b""
    assert TIMEOUT - 0.5 < held < TIMEOUT + 3, held


SLOWLORIS = {
    "request-line": [b"GET /pub/noa", b"rch/repo", b"data.json"],
    "header-fields": [b"GET /pub/noarch/repodata.json HTTP/1.1\r\nHost: x\r\n", b"X-A: 1\r\n"],
    "blank-lines": [b"\r\n", b"\r\n"],
    "after-a-request": [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n",
        b"X-C: 1\r\n",
    ],
}


@pytest.mark.parametrize("shape", SLOWLORIS, ids=list(SLOWLORIS))
def test_a_head_sent_a_piece_at_a_time_is_cut_off_with_a_408(
    proxy: tuple[Proxy, Upstream], shape: str
) -> None:
    """Each piece comes well within the timeout (so a per-read timeout would never fire),
    but the head never ends."""
    started, _ = proxy
    first, *rest = SLOWLORIS[shape]
    with connect(started) as sock:
        opened = time.monotonic()
        sock.sendall(first)
        closed = False
        while time.monotonic() - opened < TIMEOUT + 4 and not closed:
            time.sleep(0.3)
            try:
                sock.sendall(rest[0] if rest else b"x")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        got = read_until_closed(sock)
        held = time.monotonic() - opened
    assert held < TIMEOUT + 4, f"a head never completed, and the connection is open after {held}"
    assert b"HTTP/1.1 408 " in got, got[-300:]


def test_what_is_slow_legitimately_is_not_cut(proxy: tuple[Proxy, Upstream]) -> None:
    started, upstream = proxy
    before = len(started.log())
    with connect(started) as sock:
        # A response that starts later than the header timeout.
        upstream.override(f"/{PACKAGE}", SLOW, delay=TIMEOUT + 1)
        try:
            sock.sendall(f"GET /pub/{PACKAGE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = b""
            while len(reply) < len(SLOW) or b"\r\n\r\n" not in reply:
                chunk = sock.recv(65536)
                assert chunk, reply[:300]
                reply += chunk
        finally:
            upstream.reset()
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert hashlib.sha256(body).digest() == hashlib.sha256(SLOW).digest()
        # Then a keep-alive pause shorter than uvicorn's own keep-alive timeout, a big but
        # ordinary head (48 KiB of fields), and two pipelined requests, on the same connection.
        time.sleep(1)
        fields = b"".join(b"X-F%d: %s\r\n" % (i, b"f" * 90) for i in range(500))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        replies = b""
        while replies.count(b'{"status":"ok"}') < 3:
            chunk = sock.recv(65536)
            assert chunk, replies[-300:]
            replies += chunk
        assert replies.count(b"HTTP/1.1 200 ") == 3
    no_crash_in_log(started.log()[before:])
