"""A client that starts a download the proxy cannot keep, then leaves, against a real proxy.

A file no record lists (a removed build, a lockfile URL) is streamed but never cached, and so
is every file while the disk is below `min_free`. Such a download is for its clients alone.
A HEAD, or a GET whose client hangs up, used to leave it running to the end: the proxy pulled
the whole file from upstream for nobody, so a client sending one HEAD after another (free for
it) kept the proxy downloading big files without end. Now it stops once its last reader has
gone; a download that will be cached still outlives the client that hung up, and a client
still reading is never cut by another one leaving.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

SIZE = 24 << 20
RATE = 8  # MiB/s the upstream sends each body at: a whole file takes 3 s
LISTED = "linux-64/listed-1.0-0.conda"
UNLISTED = "linux-64/removed-1.0-0.conda"


@pytest.fixture(scope="module")
def channel(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Upstream, dict[str, bytes]]]:
    base = tmp_path_factory.mktemp("abandoned")
    files = {LISTED: os.urandom(SIZE), UNLISTED: os.urandom(SIZE)}
    upstream = Upstream(
        listed_channel(base / "channel", {LISTED: files[LISTED]}, {UNLISTED: files[UNLISTED]})
    ).start()
    yield upstream, files
    upstream.stop()


def proxy_for(upstream: Upstream, base, room: bool) -> Proxy:  # type: ignore[no-untyped-def]
    extra = "" if room else 'min_free = "1000TiB"\n'  # no room: nothing is kept
    config = write_config(
        base / "proxy.toml", base / "cache", {"pub": {"upstream": upstream.url}}, extra=extra
    )
    return Proxy(config).start()


@pytest.fixture(scope="module")
def proxies(channel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, Proxy]]:  # type: ignore[no-untyped-def]
    upstream, _ = channel
    started = {
        room: proxy_for(upstream, tmp_path_factory.mktemp(f"room-{room}"), room)
        for room in (True, False)
    }
    yield started
    for proxy in started.values():
        proxy.stop()


def read_bytes(proxy: Proxy) -> int:
    """Bytes the proxy's processes have read (from sockets and files) so far."""
    total = 0
    pids = [proxy.proc.pid] if proxy.proc else []  # type: ignore[union-attr]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) in pids:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as io:
                total += next(int(line.split()[1]) for line in io if line.startswith("rchar"))
        except OSError:
            continue
    return total


def request(proxy: Proxy, method: str, path: str, headers: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    sock.sendall(f"{method} /pub/{path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    return sock


def leave(proxy: Proxy, how: str, path: str) -> None:
    """Start a download of `path` and leave it the way `how` says."""
    if how == "head":
        with request(proxy, "HEAD", path) as sock:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        return
    headers = "Range: bytes=0-1023\r\n" if how == "range-then-hang-up" else ""
    with request(proxy, "GET", path, headers) as sock:
        got = 0
        while got < 2 << 20:
            chunk = sock.recv(65536)
            assert chunk
            got += len(chunk)


def quiet(proxy: Proxy, seconds: float = 2.0) -> int:
    """What the proxy reads in `seconds`, once what was in flight has landed."""
    time.sleep(0.7)
    before = read_bytes(proxy)
    time.sleep(seconds)
    return read_bytes(proxy) - before


def whole(proxy: Proxy, path: str) -> bytes:
    with request(proxy, "GET", path) as sock:
        reply = b""
        while chunk := sock.recv(1 << 20):
            reply += chunk
            if b"\r\n\r\n" in reply and len(reply.split(b"\r\n\r\n", 1)[1]) >= SIZE:
                break
    return reply.split(b"\r\n\r\n", 1)[1]


@pytest.fixture
def slow(channel) -> Iterator[None]:  # type: ignore[no-untyped-def]
    upstream, _ = channel
    upstream.mode(f"rate:{RATE}")
    yield
    upstream.mode("ok")


CASES = [(UNLISTED, True), (LISTED, False), (UNLISTED, False)]


@pytest.mark.parametrize("how", ["head", "hang-up", "range-then-hang-up"])
@pytest.mark.parametrize(
    ("path", "room"), CASES, ids=["unlisted", "listed-no-room", "unlisted-no-room"]
)
def test_a_download_nothing_keeps_stops_when_its_last_client_leaves(
    proxies,
    channel,
    slow,
    how: str,
    path: str,
    room: bool,  # type: ignore[no-untyped-def]
) -> None:
    proxy, (_, files) = proxies[room], channel
    before = len(proxy.log())
    leave(proxy, how, path)
    read = quiet(proxy)
    # At RATE MiB/s a download still running reads ~16 MiB in these 2 s.
    assert read < 3 << 20, f"the proxy read {read >> 20} MiB after its only client left"
    if how != "head" or path != LISTED:  # a HEAD of a listed file downloads nothing
        assert '"download stopped: no client left' in proxy.log()[before:]
    # Nothing is left half-done: the next client gets the whole file.
    assert hashlib.sha256(whole(proxy, path)).digest() == hashlib.sha256(files[path]).digest()
    no_crash_in_log(proxy.log()[before:])


def test_a_download_that_will_be_cached_outlives_the_client_that_left(
    proxies, channel, slow
) -> None:  # type: ignore[no-untyped-def]
    proxy = proxies[True]
    leave(proxy, "hang-up", LISTED)
    cached = proxy.events_where(
        lambda e: e.get("event") == "cached" and LISTED in str(e.get("key")), seconds=15
    )
    assert cached, "the listed file was not cached after its client hung up"


def test_one_client_leaving_does_not_cut_another(proxies, channel, slow) -> None:  # type: ignore[no-untyped-def]
    proxy, (_, files) = proxies[False], channel
    stays = request(proxy, "GET", UNLISTED)
    time.sleep(0.3)
    leave(proxy, "hang-up", UNLISTED)
    reply = b""
    with stays:
        while len(reply.split(b"\r\n\r\n", 1)[-1]) < SIZE or b"\r\n\r\n" not in reply:
            chunk = stays.recv(1 << 20)
            assert chunk, "the client still reading was cut off"
            reply += chunk
    assert (
        hashlib.sha256(reply.split(b"\r\n\r\n", 1)[1]).digest()
        == hashlib.sha256(files[UNLISTED]).digest()
    )
