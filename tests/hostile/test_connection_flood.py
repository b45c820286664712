"""A client that opens more connections than the proxy has file descriptors, against a real
proxy with a small descriptor limit (`ulimit -n`, 1024 on many hosts; 256 here so the test
stays small): hundreds of connections whose heads never end (slowloris), or that never send
anything. Every descriptor went to them, the kernel's accept queue filled behind them, and
every other client, conda included, was reset until the attacker's heads timed out, when it
could open them again.

The proxy raises its soft limit to the hard one, admits at most half of its descriptors as
connections, and when full closes the connection that has waited longest for a head
(web/occupancy.py): clients with a request under way are never cut, and a newcomer is
refused (503, Retry-After, JSON) only when every connection has one."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import http, listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/flood-1.0-0.conda"
DATA = b"flood package " * 5000
BIG = "linux-64/big-1.0-0.conda"
BIG_DATA = bytes(range(256)) * (4 << 12)  # 4 MiB: 0.8 s from the upstream in slow mode
TIGHT = (256, 256)  # the proxy keeps 16 connections (web/occupancy.connection_budget)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    base = tmp_path_factory.mktemp("flood-upstream")
    started = Upstream(listed_channel(base / "channel", {PACKAGE: DATA, BIG: BIG_DATA})).start()
    yield started
    started.stop()


def _proxy(tmp_path, upstream: Upstream, nofile: tuple[int, int], workers: int = 1) -> Proxy:
    config = write_config(
        tmp_path / "proxy.toml",
        tmp_path / "cache",
        {"cf": {"upstream": upstream.url}},
        extra="[server]\nheader_timeout = 30\n",
    )
    return Proxy(config, workers=workers, nofile=nofile).start()


def _flood(proxy: Proxy, heads: int, silent: int) -> list[socket.socket]:
    """Connections that began a head and never end it, and connections that send nothing."""
    opened = []
    for i in range(heads + silent):
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        if i < heads:
            sock.sendall(b"GET /cf/linux-64/repodata.json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        opened.append(sock)
    time.sleep(1)  # the proxy has taken them all in
    return opened


def _close(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def _still_open(socks: list[socket.socket]) -> int:
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            count += sock.recv(1) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def _installable(proxy: Proxy) -> None:
    """What a conda client does, on fresh connections: repodata, then the package."""
    with http(10) as client:
        assert client.get(f"{proxy.url}/healthz").status_code == 200
        repodata = client.get(f"{proxy.url}/cf/linux-64/repodata.json")
        assert repodata.status_code == 200, repodata.text
        record = repodata.json()["packages.conda"]["flood-1.0-0.conda"]
        got = client.get(f"{proxy.url}/cf/{PACKAGE}")
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == record["sha256"]


def _response_body(sock: socket.socket) -> bytes:
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length and (chunk := sock.recv(1 << 20)):
        body += chunk
    return body


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(("heads", "silent"), [(500, 0), (0, 500), (300, 300)])
def test_a_flood_of_unfinished_connections_does_not_lock_clients_out(
    tmp_path, upstream, workers, heads, silent
):
    proxy = _proxy(tmp_path, upstream, TIGHT, workers)
    socks: list[socket.socket] = []
    try:
        socks = _flood(proxy, heads, silent)
        started = time.monotonic()
        for _ in range(3):
            _installable(proxy)
        assert time.monotonic() - started < 10
        # The flood was shed, not held: at most the proxy's budget of it is still open.
        assert _still_open(socks) <= 16 * workers + 4
        _close(socks)
        _installable(proxy)
        no_crash_in_log(proxy.log())
    finally:
        _close(socks)
        proxy.stop()


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path, upstream):
    """A soft limit of 256 under a hard one of 4096 (the usual 1024/524288 of a systemd host,
    scaled down): the proxy uses the hard one, so the same flood is held, not shed, and
    clients still get in."""
    proxy = _proxy(tmp_path, upstream, (256, 4096))
    socks: list[socket.socket] = []
    try:
        socks = _flood(proxy, 300, 300)
        _installable(proxy)
        assert _still_open(socks) == 600
        no_crash_in_log(proxy.log())
    finally:
        _close(socks)
        proxy.stop()


def test_when_every_connection_has_a_request_under_way_a_newcomer_gets_a_503(tmp_path, upstream):
    """16 clients each downloading a package the slow upstream takes ~1 s to send: the 17th
    connection is answered 503 with Retry-After and a JSON reason, and the 16 complete."""
    proxy = _proxy(tmp_path, upstream, TIGHT)
    upstream.mode("slow")
    busy = []
    try:
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
            sock.sendall(f"GET /cf/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            busy.append(sock)
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as newcomer:
            answer = b""
            while chunk := newcomer.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"retry-after: 1" in head.lower()
        assert "connections" in json.loads(body)["error"]
        for sock in busy:  # the clients under way were not cut for the newcomer
            assert _response_body(sock) == BIG_DATA
    finally:
        _close(busy)
        upstream.mode("ok")
        proxy.stop()
    assert proxy.proc is not None
    no_crash_in_log(proxy.log())
