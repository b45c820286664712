"""A request answered before its body ended (a GET with a body, a path that is a 404, an upload
refused before its body was read), whose client then trickles the rest of that body a byte at
a time, against a real proxy. The proxy receives and drops such a body; uvicorn's keep-alive
timer stops at the first byte received and the head timer (server.header_timeout) waits for a
head that never starts, so each such connection was held for as long as the client liked
(the slowloris that web/connection.py bounds for heads, through the body instead). Now the rest
of an answered body must keep the minimum pace of rules/pace.py over windows of
header_timeout, or the connection is closed.

A body that keeps arriving at any real pace is not cut, and the connection goes on serving
the next request once it has arrived (keep-alive)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import listed_channel
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

TIMEOUT = 2  # server.header_timeout in this test
LENGTH = 1 << 20  # the body each request announces

# (request head announcing a body, what a piece of that body looks like)
REQUESTS = {
    "get-with-a-length": (
        b"GET /pub/linux-64/repodata.json HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Length: {LENGTH}\r\n\r\n".encode(),
        b"x",
    ),
    "get-chunked": (
        b"GET /pub/linux-64/repodata.json HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"1\r\nx\r\n",
    ),
    "a-404-with-a-length": (
        b"GET /nothing/here HTTP/1.1\r\nHost: x\r\n" + f"Content-Length: {LENGTH}\r\n\r\n".encode(),
        b"x",
    ),
    "an-upload-refused-before-its-body": (
        b"POST /api/channels/pub/upload/a-1.0-0.conda HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Length: {LENGTH}\r\n\r\n".encode(),
        b"x",
    ),
}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("unread-bodies")
    upstream = Upstream(listed_channel(base / "channel", {"linux-64/a-1.0-0.conda": b"a"})).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}},
        extra=f"[server]\nheader_timeout = {TIMEOUT}\n",
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


def _status(got: bytes) -> int:
    return int(got.split()[1]) if got.startswith(b"HTTP/") else 0


def _send_for(
    sock: socket.socket, piece: bytes, every: float, seconds: float, most: int = 1 << 30
) -> tuple[bytes, str]:
    """Send `piece` every `every` seconds for `seconds` (at most `most` times), reading what
    comes back; what came back, and how the connection ended ('' if still open)."""
    sock.settimeout(every)
    got, started, sent = b"", time.monotonic(), 0
    while time.monotonic() - started < seconds:
        try:
            if sent < most:
                sock.sendall(piece)
                sent += 1
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as exc:
            return got, type(exc).__name__
        if not chunk:
            return got, "closed"
        got += chunk
    return got, ""


@pytest.mark.parametrize("request_", sorted(REQUESTS))
def test_a_trickled_body_nobody_reads_does_not_hold_the_connection(proxy, request_) -> None:
    head, piece = REQUESTS[request_]
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    try:
        sock.sendall(head)
        started = time.monotonic()
        got, ended = _send_for(sock, piece, 0.5, 6 * TIMEOUT)  # 2 bytes a second
        assert _status(got) in (200, 401, 404), got[:200]
        assert ended, "the connection was still held after 6 header timeouts"
        assert time.monotonic() - started < 4 * TIMEOUT
    finally:
        sock.close()


PIECES = 12 * TIMEOUT  # 16 KiB every 0.25 s (64 KiB/s) for 3 header timeouts
NEXT = b"GET /pub/linux-64/repodata.json HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("request_", sorted(REQUESTS))
def test_an_unread_body_at_a_real_pace_keeps_its_connection(proxy, request_) -> None:
    head, piece = REQUESTS[request_]
    if piece == b"x":
        head = head.replace(str(LENGTH).encode(), str(PIECES * 16384).encode())
        piece, end = b"x" * 16384, b""
    else:
        piece, end = b"4000\r\n" + b"x" * 16384 + b"\r\n", b"0\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    try:
        sock.sendall(head)
        got, ended = _send_for(sock, piece, 0.25, 0.25 * PIECES, PIECES)
        assert not ended, f"cut off: {ended}"
        assert _status(got) in (200, 401, 404), got[:200]
        # The body is complete: the next request on the same connection is answered.
        sock.sendall(end + NEXT)
        sock.settimeout(10)
        while got.count(b"HTTP/1.1 ") < 2:
            chunk = sock.recv(65536)
            assert chunk, "closed instead of answering the next request"
            got += chunk
        assert got.split(b"HTTP/1.1 ")[2].startswith(b"200"), got[-300:]
    finally:
        sock.close()
