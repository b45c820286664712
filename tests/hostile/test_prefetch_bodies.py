"""A hostile admin caller's prefetch body, against a real proxy: JSON nested deeper than a
parser can descend (json.loads raised RecursionError, answered as a 500 "internal error"),
bytes that are no UTF-8, and bodies of any size (the whole body was read into memory
however long it grew). Each is bad input: a JSON 400 (413 past the bound, by Content-Length
before a byte is read or as a chunked body arrives), no error event, and no job."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import admin_proxy, read_until_closed
from tests.support.processes import Proxy

pytestmark = pytest.mark.integration

ADMIN = "admin-token-97531"
PREFETCH = "/api/cache/pub/linux-64/prefetch"
HEADERS = {"x-api-key": ADMIN, "content-type": "application/json"}
BOUND = 4 << 20


@pytest.fixture(scope="module")
def proxy(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with admin_proxy(channel_dir, tmp_path_factory.mktemp("prefetch-bodies"), ADMIN) as started:
        yield started


NOT_JSON = {
    "nested-arrays": b"[" * 100_000,
    "nested-objects": b'{"packages":' * 50_000,
    "nested-inside-the-list": b'{"packages": ["pyutil", ' + b"[" * 100_000 + b"]}",
    "not-utf8": b'["\xff\xfe"]',
    "nan": b'{"packages": ["pyutil"], "with_dependencies": NaN}',
    "empty": b"",
    "truncated": b'{"packages": ["pyutil"',
}


def jobs(proxy: Proxy) -> list[dict[str, object]]:
    stats = httpx.get(f"{proxy.url}/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    return list(stats["prefetch"])


@pytest.mark.parametrize("body", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_body_that_is_not_readable_json_is_a_400_never_a_500(proxy, body):
    before, logged = len(jobs(proxy)), len(proxy.log())
    answer = httpx.post(f"{proxy.url}{PREFETCH}", content=body, headers=HEADERS, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": "body is not JSON", "status": 400}
    assert len(jobs(proxy)) == before
    log = proxy.log()[logged:]
    assert '"request failed"' not in log
    assert "RecursionError" not in log


def exchange(proxy: Proxy, head: bytes, pieces: Iterator[bytes]) -> bytes:
    """Send a request head, then body pieces until the proxy stops taking them; its answer."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        sock.sendall(head)
        try:
            for piece in pieces:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(sock)


def chunked(total: int) -> Iterator[bytes]:
    piece = b"[" + b" " * (1 << 20)
    for _ in range(total // len(piece) + 1):
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_past_the_bound_is_a_413_whatever_the_framing(proxy, framing):
    start = f"POST {PREFETCH} HTTP/1.1\r\nHost: proxy\r\nX-API-Key: {ADMIN}\r\n"
    if framing == "content-length":
        head = f"{start}Content-Length: {64 << 20}\r\n\r\n".encode()
        pieces: Iterator[bytes] = iter([b"[" * 1024] * 1024)
    else:
        head = f"{start}Transfer-Encoding: chunked\r\n\r\n".encode()
        pieces = chunked(3 * BOUND)
    answer = exchange(proxy, head, pieces)
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(body)["error"] == f"a prefetch request body is larger than {BOUND} bytes"


def test_a_label_scope_names_the_prefetch_route_not_the_purge(proxy):
    answer = httpx.post(
        f"{proxy.url}/api/cache/pub/label/dev/linux-64/prefetch", json=["x"], headers=HEADERS
    )
    assert answer.status_code == 400
    assert "prefetch is POST /api/cache/<channel>/<subdir>/prefetch" in answer.json()["error"]


@pytest.mark.parametrize("body", [["pyutil"], {"packages": ["pyutil"], "with_dependencies": True}])
def test_well_formed_bodies_are_still_taken(proxy, body):
    answer = httpx.post(f"{proxy.url}{PREFETCH}", json=body, headers=HEADERS)
    assert answer.status_code == 202, answer.text
    assert answer.json()["items"] == ["pyutil"]
