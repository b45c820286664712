"""Clients that ask for a big file and then take no bytes, against a real proxy: after
`server.send_timeout` seconds with the response blocked on them, their connections are dropped
(nginx's send_timeout), so they cannot hold descriptors and response pieces for ever. A slow
reader that keeps taking bytes, and every other client, get their whole file."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import get_one, listed_channel
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

SIZE = 48 << 20  # far more than the socket buffers on both sides hold
BIG = "linux-64/big-1.0-0.conda"
SEND_TIMEOUT = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, bytes]]:
    base = tmp_path_factory.mktemp("stalled")
    data = os.urandom(SIZE)
    upstream = Upstream(listed_channel(base / "channel", {BIG: data})).start()
    config = write_config(base / "proxy.toml", base / "cache", {"pub": {"upstream": upstream.url}})
    config.write_text(config.read_text() + f"[server]\nsend_timeout = {SEND_TIMEOUT}\n")
    proxy = Proxy(config).start()
    assert get_one(f"{proxy.url}/pub/{BIG}", timeout=60).status == 200  # cached
    yield proxy, data
    proxy.stop()
    upstream.stop()


def ask(proxy: Proxy) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proxy.port))
    sock.sendall(f"GET /pub/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def drain(sock: socket.socket, pause: float = 0.0, seconds: float = 60) -> int:
    """Read until the server closes the connection (or `seconds` pass); bytes received."""
    sock.settimeout(seconds)
    received = 0
    try:
        while chunk := sock.recv(1 << 16):
            received += len(chunk)
            if pause:
                time.sleep(pause)
    except (ConnectionResetError, TimeoutError):
        pass
    return received


@pytest.mark.parametrize("stalled", [1, 20])
def test_a_client_that_takes_nothing_is_dropped_after_send_timeout(served, stalled) -> None:
    proxy, data = served
    clients = [ask(proxy) for _ in range(stalled)]
    try:
        time.sleep(SEND_TIMEOUT * 2 + 1)  # blocked, then timed out
        # Everyone else is served meanwhile.
        got = get_one(f"{proxy.url}/pub/{BIG}", timeout=60)
        assert (
            got.status == 200 and hashlib.sha256(got.body).digest() == hashlib.sha256(data).digest()
        )
        for sock in clients:
            started = time.monotonic()
            received = drain(sock, seconds=30)
            # The connection was dropped: what was buffered arrives, then the end, at once,
            # well short of the whole body.
            assert received < SIZE
            assert time.monotonic() - started < 10
    finally:
        for sock in clients:
            sock.close()


def test_a_slow_reader_that_keeps_reading_gets_the_whole_file(served) -> None:
    proxy, _ = served
    sock = ask(proxy)
    try:
        # A pause per 64 KiB read, each far shorter than send_timeout: the sender is never
        # blocked that long, so the response runs to its end.
        received = drain(sock, pause=0.002, seconds=120)
    finally:
        sock.close()
    head = 200  # the status line and headers come first
    assert received > SIZE and received < SIZE + 4096 + head
