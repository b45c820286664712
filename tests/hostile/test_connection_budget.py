"""A client that pipelines its next request behind a response still going out, against a real
proxy with a small connection budget (web/occupancy.py) and a short `server.header_timeout`.

The connection counted as "waiting for a head" while a response was under way: a pipelined
request whose head was complete (queued by uvicorn) restarted the head clock when the
previous response ended, and a pipelined head still arriving started it at its first byte.
The clock then cut the response being streamed after header_timeout (and wrote its 408, or a
431 for an oversized head, into the middle of that body), and a flood of newcomers shed the
connection as the one that had waited longest for a head. A request under way is never timed
out as a head nor shed: its next head is timed from the end of its response."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.channel import build_channel
from tests.support.clients import rattler_install
from tests.support.hostile import listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

TIMEOUT = 1  # server.header_timeout here
BIG = "linux-64/big-1.0-0.conda"
SMALL = "linux-64/small-1.0-0.conda"
BIG_DATA = os.urandom(12 << 20)
SMALL_DATA = os.urandom(300 << 10)
TIGHT = (256, 256)  # 16 connections per worker (web/occupancy.connection_budget)
READ_FOR = 3 * TIMEOUT  # the big response is read slowly for this long, at least


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("budget")
    upstream = Upstream(
        listed_channel(base / "channel", {BIG: BIG_DATA, SMALL: SMALL_DATA})
    ).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"ch": {"upstream": upstream.url}},
        extra=f"[server]\nheader_timeout = {TIMEOUT}\n",
    )
    started = Proxy(config, nofile=TIGHT).start()
    try:
        for path in (BIG, SMALL):  # cached: every response below is a hit
            with socket.create_connection(("127.0.0.1", started.port), timeout=30) as sock:
                sock.sendall(_get(path, close=True))
                assert _responses(_read_all(sock, 0))[0][1] is not None
        yield started
    finally:
        started.stop()
        upstream.stop()
    no_crash_in_log(started.log())


def _get(path: str, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET /ch/{path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


# What follows the first request on the same connection, sent at once with it.
FOLLOWERS = {
    # A complete request, queued behind the big response, itself big.
    "complete": (SMALL, _get(BIG, close=True)),
    # A head still arriving (never finished): the big response must still arrive whole.
    "partial": (BIG, f"GET /ch/{SMALL} HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode()),
    # A head over 64 KiB: refused, but never inside the big response's body.
    "oversized": (BIG, f"GET /ch/{SMALL} HTTP/1.1\r\nX-Pad: {'a' * (80 << 10)}".encode()),
}


def _read_all(sock: socket.socket, slow_for: float) -> bytes:
    """Everything until the server closes, taking the first `slow_for` seconds slowly."""
    sock.settimeout(30)
    got = bytearray()
    started = time.monotonic()
    try:
        while chunk := sock.recv(1 << 16):
            got += chunk
            if time.monotonic() - started < slow_for:
                time.sleep(0.015)
    except (ConnectionResetError, TimeoutError):
        pass
    return bytes(got)


def _responses(stream: bytes) -> list[tuple[bytes, bytes | None]]:
    """(status line, body) of each response in `stream`; body None when cut short."""
    found: list[tuple[bytes, bytes | None]] = []
    while stream:
        head, _, rest = stream.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")
        )
        found.append((lines[0], rest[:length] if len(rest) >= length else None))
        if len(rest) < length:
            found.append((b"(cut)", rest))
            break
        stream = rest[length:]
    return found


@pytest.mark.parametrize("flood", [False, True], ids=["alone", "flood"])
@pytest.mark.parametrize("follower", sorted(FOLLOWERS))
def test_a_response_under_way_is_not_cut_for_a_pipelined_head(proxy, follower, flood):
    first, then = FOLLOWERS[follower]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(("127.0.0.1", proxy.port))
    newcomers: list[socket.socket] = []
    try:
        sock.sendall(_get(first) + then)
        if flood:  # more connections than the budget, each newer than ours
            time.sleep(0.3)
            for _ in range(24):
                newcomers.append(socket.create_connection(("127.0.0.1", proxy.port)))
                time.sleep(0.01)
        stream = _read_all(sock, READ_FOR)
    finally:
        sock.close()
        for other in newcomers:
            other.close()
    responses = _responses(stream)
    expected = {"complete": [SMALL_DATA, BIG_DATA]}.get(follower, [BIG_DATA])
    bodies = [body for status, body in responses if status.startswith(b"HTTP/1.1 200")]
    assert bodies == expected, [(s, None if b is None else len(b)) for s, b in responses]
    if follower == "partial":  # then the unfinished head times out, after the response
        assert responses[-1][0].startswith(b"HTTP/1.1 408"), responses[-1][0]
    if follower == "oversized":  # refused after the response, or the connection cut: no 431
        assert all(not s.startswith(b"HTTP/1.1 431") or b for s, b in responses[1:])


UPGRADES = {
    "websocket": "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    "websocket-case": "Upgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    "h2c": "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    "HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
}


@pytest.mark.parametrize("upgrade", sorted(UPGRADES))
def test_upgrade_requests_are_answered_as_http_and_leave_the_table(proxy, upgrade):
    """A websocket upgrade handed the connection to uvicorn's websocket protocol (a 403 for
    a conda path), and it never left this worker's connection table: 16 of them and every
    later client was refused 503 for as long as the process lived. The proxy speaks plain
    HTTP: an upgrade request is answered like any other, and its connection closed after
    (the parser takes nothing more on it)."""
    request = f"GET /ch/{SMALL} HTTP/1.1\r\nHost: x\r\n{UPGRADES[upgrade]}\r\n".encode()
    for _ in range(24):  # more than the budget
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(request)
            stream = _read_all(sock, 0)
        head = stream.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 200"), head
        assert b"connection: close" in head
        assert _responses(stream)[0][1] == SMALL_DATA
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(_get(SMALL, close=True))
        assert _responses(_read_all(sock, 0)) == [(b"HTTP/1.1 200 OK", SMALL_DATA)]


NEWCOMERS = {
    "silent": b"",
    "get": _get(SMALL),
    "post": b"POST /api/channels/ch/upload/x-1-0.conda HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 65536\r\n\r\n" + b"x" * 65536,
}


def _httpx_newcomer(proxy: Proxy, sends: str) -> bytes:
    body = {"get": None, "post": b"x" * 65536, "big-post": b"x" * (8 << 20)}[sends]
    with httpx.Client(timeout=10) as client:
        if body is None:
            got = client.get(f"{proxy.url}/ch/{SMALL}")
        else:
            got = client.post(f"{proxy.url}/api/channels/ch/upload/x-1-0.conda", content=body)
    headers = "".join(f"{k}: {v}\r\n" for k, v in got.headers.items())
    return f"HTTP/1.1 {got.status_code}\r\n{headers}\r\n".encode() + got.content


CLIENTS = [*sorted(NEWCOMERS), "httpx-get", "httpx-post", "httpx-big-post"]


def _reading_nothing(port: int, timeout: float | None = None) -> socket.socket:
    """A client that asks for the big file and reads nothing of it: its response stays
    under way (a small receive buffer, so the send buffer fills soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(timeout)
    sock.sendall(_get(BIG))
    return sock


@pytest.mark.parametrize("sends", CLIENTS)
def test_a_newcomer_turned_away_reads_its_503(proxy, sends):
    """Every connection has a response under way (16 clients that read nothing of a big
    file): a newcomer is refused 503 with Retry-After, and reads it whether it sent nothing,
    a request, or a body still being sent when the proxy closed (httpx reads the answer
    after its write fails)."""
    busy = []
    try:
        for _ in range(16):
            busy.append(_reading_nothing(proxy.port))
        time.sleep(0.5)
        for _ in range(5):
            if sends.startswith("httpx-"):
                answer = _httpx_newcomer(proxy, sends.removeprefix("httpx-"))
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 503"), answer[:200]
                continue
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as newcomer:
                newcomer.sendall(NEWCOMERS[sends])
                time.sleep(0.05)  # the request is in before the answer is read
                started = time.monotonic()
                answer = _read_all(newcomer, 0)  # closed soon, even if it never closes
                assert time.monotonic() - started < 5
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"retry-after: 1" in head.lower()
            assert "connections" in json.loads(body)["error"]
    finally:
        for sock in busy:
            sock.close()


def _lose(port: int, state: str) -> None:
    """A connection that ends in `state`."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    sends = {
        "idle": b"",
        "partial-head": b"GET /ch/x HTTP/1.1\r\nHost: x\r\nX-Pad: ",
        "oversized-head": b"GET /ch/x HTTP/1.1\r\nX-Pad: " + b"a" * (80 << 10),
        "mid-body": _get(BIG),
        "pipelined-mid-body": _get(BIG) + b"GET /ch/x HTTP/1.1\r\nHo",
        "unread-body": f"POST /ch/{SMALL} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n"
        "abc".encode(),
        "upgrade": f"GET /ch/{SMALL} HTTP/1.1\r\nHost: x\r\n{UPGRADES['websocket']}\r\n".encode(),
    }[state]
    sock.sendall(sends)
    if state != "idle":
        with contextlib.suppress(OSError):
            sock.recv(1 << 14)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


LOST = ["idle", "partial-head", "oversized-head", "mid-body", "pipelined-mid-body"]
LOST += ["unread-body", "upgrade"]


@pytest.mark.parametrize("state", LOST)
def test_connections_lost_in_any_state_leave_the_table(proxy, state):
    """More connections than the budget end in `state`; then the budget is whole: 16
    clients with a response under way are all admitted, and only the 17th is refused."""
    for _ in range(24):
        _lose(proxy.port, state)
    time.sleep(TIMEOUT + 0.5)  # whatever the proxy closes by itself is closed
    busy = []
    try:
        for _ in range(16):
            busy.append(_reading_nothing(proxy.port, timeout=10))
        assert [sock.recv(12) for sock in busy] == [b"HTTP/1.1 200"] * 16
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as newcomer:
            assert _read_all(newcomer, 0).startswith(b"HTTP/1.1 503")
    finally:
        for sock in busy:
            sock.close()


class _Flood:
    """Threads that keep opening connections whose heads never end (slowloris), many more
    than the budget: the proxy sheds the longest-waiting connection all the time, idle
    keep-alive connections of real clients among them."""

    def __init__(self, port: int) -> None:
        self.port, self.opened = port, 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        socks: list[socket.socket] = []
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(b"GET /ch/linux-64/repodata.json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                socks.append(sock)
                self.opened += 1
            if len(socks) > 100:
                for old in socks[:50]:
                    old.close()
                del socks[:50]
            time.sleep(0.002)
        for sock in socks:
            sock.close()

    def __enter__(self) -> _Flood:
        for thread in self.threads:
            thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


@pytest.mark.parametrize("workers", [1, 2])
def test_real_clients_recover_when_their_idle_connections_are_shed(tmp_path, workers):
    """py-rattler solves and installs, and an httpx pool makes request after request with
    idle gaps, while a flood keeps every worker at its budget."""
    channel = build_channel(tmp_path / "channel", tmp_path / "work")
    upstream = Upstream(channel).start()
    config = write_config(
        tmp_path / "proxy.toml",
        tmp_path / "cache",
        {"ch": {"upstream": upstream.url}},
        extra="[server]\nheader_timeout = 30\n",
    )
    started = Proxy(config, workers=workers, nofile=TIGHT).start()
    try:
        with _Flood(started.port) as flood:
            result = rattler_install(f"{started.url}/ch", tmp_path, False, "datatool")
            assert result["ok"], result.get("error")
            with httpx.Client(timeout=10) as client:
                for i in range(120):
                    got = client.get(f"{started.url}/ch/linux-64/repodata.json")
                    assert got.status_code == 200
                    time.sleep(0.001 * (i % 30))  # idle gaps: the connection may be shed
            assert flood.opened > 16 * workers * 10  # it was shedding all along
    finally:
        started.stop()
        upstream.stop()
    no_crash_in_log(started.log())
