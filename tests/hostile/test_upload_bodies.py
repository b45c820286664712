"""Hostile request bodies against a real proxy process, on both upload endpoints: chunked
bodies that ignore max_upload_size, a Content-Length over it, bodies that trickle. See
upload_env.py for what every refusal must look like."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.hostile.archives import STEM
from tests.hostile.upload_env import LIMIT, WRITE, Env, env, refused

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module


def raw_exchange(env: Env, head: bytes, body: Iterator[bytes], pace: float = 0.0) -> tuple:
    """Send `head`, then body pieces (each after `pace` seconds without an answer) until the
    proxy answers or the body ends; return (status, body, bytes of body sent before the
    answer)."""
    sock = socket.create_connection(("127.0.0.1", env.proxy.port), timeout=30)
    sent = 0
    try:
        sock.sendall(head)
        for i, piece in enumerate(body):
            readable, _, _ = select.select([sock], [], [], pace if i else 0)
            if readable:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        response = b""
        deadline = time.monotonic() + 10
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            response += data
            if b"\r\n\r\n" in response and _complete(response):
                break
    finally:
        sock.close()
    head_part, _, payload = response.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1]) if head_part else 0
    return status, payload, sent


def _complete(response: bytes) -> bool:
    head, _, payload = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(payload) >= int(line.split(b":", 1)[1])
    return False


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


BOUNDARY = b"hostile-boundary"


def multipart_head(filename: str) -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="files"; filename="' + filename.encode() + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )


def request_head(route: str, framing: bytes) -> bytes:
    path, content_type = {
        "upload": (f"/api/channels/local/upload/{STEM}.conda", b"application/octet-stream"),
        "files": ("/api/channels/local/files", b"multipart/form-data; boundary=" + BOUNDARY),
    }[route]
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: proxy\r\nX-API-Key: "
        + WRITE.encode()
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\n"
        + framing
        + b"\r\n"
    )


def endless_body(route: str, total: int) -> Iterator[bytes]:
    if route == "files":
        yield multipart_head(f"{STEM}.conda")
    for _ in range(total // 2**20):
        yield bytes(2**20)
    if route == "files":
        yield b"\r\n--" + BOUNDARY + b"--\r\n"


@pytest.mark.parametrize("route", ["upload", "files"])
def test_a_chunked_body_without_content_length_stops_at_max_upload_size(env, route):
    """Before: request.form() spooled the whole chunked multipart body (163 MiB past a 5 MiB
    limit) before anything counted it."""

    def act() -> tuple[int, bytes]:
        head = request_head(route, b"Transfer-Encoding: chunked\r\n")
        status, payload, sent = raw_exchange(env, head, chunked(endless_body(route, 48 * 2**20)))
        # Socket buffers absorb a few MiB; the proxy must not have read on to the end.
        assert sent < LIMIT + 16 * 2**20, f"the client sent {sent} bytes before any answer"
        return status, payload

    refused(env, act, 413, "max_upload_size")


@pytest.mark.parametrize("route", ["upload", "files"])
def test_a_content_length_over_the_limit_is_refused_before_reading(env, route):
    def act() -> tuple[int, bytes]:
        head = request_head(route, b"Content-Length: %d\r\n" % (LIMIT + 1))
        body = iter([*[bytes(2**20)] * 5, b"x"])
        status, payload, sent = raw_exchange(env, head, body, pace=0.5)
        assert sent <= 2**20, f"the client sent {sent} bytes before any answer"
        return status, payload

    refused(env, act, 413, "max_upload_size")


@pytest.mark.parametrize("route", ["upload", "files"])
def test_a_trickling_body_is_cut_after_read_timeout(env, route):
    """headers, then a byte every 3 s: with read_timeout = 1 the proxy answers 408."""
    first = multipart_head(f"{STEM}.conda") if route == "files" else b"P"

    def trickle() -> Iterator[bytes]:
        yield first
        for _ in range(4):  # 12 s at most, then the client gives up and the test fails
            yield b"K"

    def act() -> tuple[int, bytes]:
        head = request_head(route, b"Content-Length: 100000\r\n")
        started = time.monotonic()
        status, payload, _ = raw_exchange(env, head, trickle(), pace=3.0)
        assert time.monotonic() - started < 8
        return status, payload

    error = refused(env, act, 408, "read_timeout")
    assert error["read_timeout"] == 1
