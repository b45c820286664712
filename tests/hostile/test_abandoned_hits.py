"""Clients that ask for a big cached file and hang up at once, against a real proxy. uvicorn's
`send` to a closed connection returns at once without a word, so the response for a cached
file went on reading the whole rest of the file from disk, on the event loop (no send waited,
so nothing else ran meanwhile), for nobody: each abandoned GET of a 1 GiB package cost the
worker a 1 GiB read with every other client frozen, and a handful of such requests froze it
for seconds. A hit now stops at its client's hang-up, as a miss does (web/responses.py).
Measured by what the proxy's processes read (/proc/<pid>/io rchar, which counts page-cache
reads too), so it does not depend on the machine's speed."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hostile import get_one, listed_channel, process_tree
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

SIZE = 64 << 20
BIG = "linux-64/big-1.0-0.conda"
CLIENTS = 8


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("abandoned-hits")
    upstream = Upstream(listed_channel(base / "channel", {BIG: os.urandom(SIZE)})).start()
    config = write_config(base / "proxy.toml", base / "cache", {"pub": {"upstream": upstream.url}})
    started = Proxy(config).start()
    assert get_one(f"{started.url}/pub/{BIG}", timeout=60).status == 200  # cached
    yield started
    started.stop()
    upstream.stop()


def _read_bytes(proxy: Proxy) -> int:
    total = 0
    for pid in process_tree(proxy.proc.pid):
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("rchar:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _hang_up(sock: socket.socket, how: str) -> None:
    if how == "reset":  # RST at once: SO_LINGER 0
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("method", ["GET", "GET-range"])
@pytest.mark.parametrize("how", ["reset", "close"])
def test_a_hit_stops_reading_when_its_client_hangs_up(proxy, method, how) -> None:
    extra = "Range: bytes=1000-\r\n" if method == "GET-range" else ""
    before = _read_bytes(proxy)
    for _ in range(CLIENTS):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /pub/{BIG} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        assert sock.recv(12).startswith(b"HTTP/1.1 20")
        _hang_up(sock, how)
    time.sleep(2)  # whatever the proxy goes on reading, it has read by now (~2 GB/s)
    assert get_one(f"{proxy.url}/pub/{BIG}", timeout=60).status == 200  # still served
    read = _read_bytes(proxy) - before - SIZE  # less the whole file read for the last GET
    assert read < CLIENTS * SIZE // 4, f"{read >> 20} MiB read for {CLIENTS} clients gone"
