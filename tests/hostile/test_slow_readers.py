"""Clients that ask for a big package and then read nothing, against a real proxy.

Each such connection costs its client nothing, and used to pin about 2 MiB of the proxy's
memory for as long as it stayed open (a 1 MiB piece of the body written whole into the
connection's buffer, and its copy): 200 of them held 400 MB, enough to push a pod over its
memory limit. Now the body goes out in 256 KiB pieces (web/responses.send_pieces), so a
reader that stops pins at most about half a MiB, whether the file is cached or still
arriving; and a client that does read still gets its file at once.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import get_one, listed_channel, tree_memory
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

CLIENTS = 120
SIZE = 40 << 20
CACHED = "linux-64/cached-1.0-0.conda"
COLD = "linux-64/cold-1.0-0.conda"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Upstream, dict]]:
    base = tmp_path_factory.mktemp("slow-readers")
    files = {CACHED: os.urandom(SIZE), COLD: os.urandom(SIZE)}
    upstream = Upstream(listed_channel(base / "channel", files)).start()
    config = write_config(base / "proxy.toml", base / "cache", {"pub": {"upstream": upstream.url}})
    proxy = Proxy(config).start()
    yield proxy, upstream, files
    proxy.stop()
    upstream.stop()


def stalled_clients(proxy: Proxy, path: str, count: int) -> list[socket.socket]:
    """`count` connections that ask for `path` and never read (a small receive window)."""
    clients = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(f"GET /pub/{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        clients.append(sock)
    return clients


@pytest.mark.parametrize("path", [CACHED, COLD], ids=["cached", "cold"])
def test_clients_that_stop_reading_pin_little_memory(
    served: tuple[Proxy, Upstream, dict], path: str
) -> None:
    proxy, upstream, files = served
    if path == CACHED:
        assert get_one(f"{proxy.url}/pub/{path}").status == 200  # cached before they come
    else:
        upstream.mode("rate:20")  # still arriving while they stop reading
    pid = proxy.proc.pid  # type: ignore[union-attr]
    time.sleep(0.5)
    before = tree_memory(pid)[0]
    clients = stalled_clients(proxy, path, CLIENTS)
    try:
        time.sleep(4)  # their buffers fill, the kernel's and the proxy's
        grown = tree_memory(pid)[0] - before
        # A reader still gets the whole file meanwhile.
        got = get_one(f"{proxy.url}/pub/{path}", timeout=60)
        assert got.status == 200 and got.complete
        assert hashlib.sha256(got.body).digest() == hashlib.sha256(files[path]).digest()
    finally:
        for sock in clients:
            sock.close()
        upstream.mode("ok")
    per_client = grown / CLIENTS
    # 1 MiB pieces pinned ~2 MiB each; 256 KiB pieces about half a MiB.
    assert per_client < 1 << 20, f"{per_client / (1 << 20):.2f} MiB per stalled client"
