"""Stopping the proxy in the middle of a long download, as an orchestrator does.

A client that stopped reading cannot hold a SIGTERM forever: after `server.shutdown_timeout`
it is cut off and the process exits with status 0, before the orchestrator's SIGKILL.

SIGTERM: the download in flight is drained (its client gets the whole verified file), the
process exits with status 0, and a restart serves the file as a hit. SIGKILL at the same point:
the restart sweeps the partial temp file and serves nothing damaged (the file is fetched again
and verified).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hostile import (
    Got,
    all_workers_started,
    get_one,
    http,
    listed_channel,
    no_crash_in_log,
    wait_for,
)
from tests.support.processes import Proxy, Upstream

pytestmark = pytest.mark.integration

BIG = "linux-64/big-1.0-0.conda"
DATA = os.urandom(6 << 20)  # 0.2 s per MiB when the upstream is slow: about 1.2 s


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    server = Upstream(listed_channel(tmp_path / "channel", {BIG: DATA})).start()
    yield server
    server.stop()


def download_under_way(proxy: Proxy, cache: Path) -> tuple[threading.Thread, list[Got]]:
    got: list[Got] = []
    thread = threading.Thread(
        target=lambda: got.append(get_one(f"{proxy.url}/ch/{BIG}", timeout=60)), daemon=True
    )
    thread.start()
    written = lambda: any(p.stat().st_size > 1 << 20 for p in (cache / "tmp").glob("*.partial"))  # noqa: E731
    wait_for(written, 10, "the download is being written")
    return thread, got


def assert_whole(got: Got) -> None:
    assert (got.status, got.complete, len(got.body)) == (200, True, len(DATA))
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_a_long_download_exits_0_and_the_restart_serves_it(
    upstream, start_proxy, tmp_path: Path, workers: int
) -> None:
    cache = tmp_path / "cache"
    proxy = all_workers_started(
        start_proxy({"ch": {"upstream": upstream.url}}, workers=workers), workers
    )
    with http() as client:
        assert client.get(f"{proxy.url}/ch/linux-64/repodata.json").status_code == 200
    upstream.mode("slow")
    thread, got = download_under_way(proxy, cache)
    assert proxy.proc is not None
    os.killpg(proxy.proc.pid, signal.SIGTERM)
    assert proxy.proc.wait(30) == 0, proxy.log()[-2000:]
    thread.join(30)
    assert_whole(got[0])
    assert not list((cache / "tmp").iterdir())
    no_crash_in_log(proxy.log())

    upstream.mode("ok")
    again = start_proxy({"ch": {"upstream": upstream.url}}, workers=workers)
    hit = get_one(f"{again.url}/ch/{BIG}")
    assert_whole(hit)
    assert hit.headers["x-cache"] == "HIT"


def test_sigkill_mid_download_leaves_nothing_a_restart_would_serve(
    upstream, start_proxy, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    proxy = start_proxy({"ch": {"upstream": upstream.url}})
    with http() as client:
        assert client.get(f"{proxy.url}/ch/linux-64/repodata.json").status_code == 200
    upstream.mode("slow")
    thread, _ = download_under_way(proxy, cache)
    proxy.stop(kill=True)
    thread.join(30)
    assert list((cache / "tmp").glob("*.partial")), "the partial file a kill leaves"
    upstream.mode("ok")
    again = start_proxy({"ch": {"upstream": upstream.url}})
    all_workers_started(again, 1)
    assert not list((cache / "tmp").iterdir()), "swept at start-up"
    got = get_one(f"{again.url}/ch/{BIG}")
    assert_whole(got)
    assert got.headers["x-cache"] == "MISS"
    time.sleep(0.2)
    assert get_one(f"{again.url}/ch/{BIG}").headers["x-cache"] == "HIT"
    no_crash_in_log(again.log())


def test_a_client_that_stopped_reading_cannot_hold_a_sigterm(start_proxy, tmp_path: Path) -> None:
    data = os.urandom(40 << 20)  # far more than the socket buffers hold
    files = {"linux-64/huge-1.0-0.conda": data}
    server = Upstream(listed_channel(tmp_path / "channel", files)).start()
    try:
        extra = "[server]\nshutdown_timeout = 2\n"
        proxy = start_proxy({"ch": {"upstream": server.url}}, extra=extra)
        first = get_one(f"{proxy.url}/ch/linux-64/huge-1.0-0.conda", timeout=60)
        assert first.status == 200  # cached: the next one is a hit from disk
        with socket.create_connection(("127.0.0.1", proxy.port)) as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.sendall(b"GET /ch/linux-64/huge-1.0-0.conda HTTP/1.1\r\nHost: x\r\n\r\n")
            assert stalled.recv(64).startswith(b"HTTP/1.1 200")  # then it reads no more
            time.sleep(0.5)
            assert proxy.proc is not None
            os.killpg(proxy.proc.pid, signal.SIGTERM)
            started = time.monotonic()
            try:
                code = proxy.proc.wait(15)
            except Exception:
                pytest.fail("a client that stopped reading held the SIGTERM for 15 s")
        assert code == 0
        assert time.monotonic() - started < 10
        again = start_proxy({"ch": {"upstream": server.url}})
        hit = get_one(f"{again.url}/ch/linux-64/huge-1.0-0.conda", timeout=60)
        assert (hit.headers["x-cache"], hit.sha256) == ("HIT", hashlib.sha256(data).hexdigest())
    finally:
        server.stop()
