"""A full disk never fails a download.

The cache lives on a small tmpfs (root mounts it, as in CI; the fixture fails loudly when it
cannot) and the upstream serves a listed file bigger than the space left, to several clients
at once, with one and two workers: the disk fills up mid-download (ENOSPC), or is below
`min_free` before the download starts. Every client must get the whole verified file, nothing
half-written may stay behind, the event must be logged and counted, and the proxy must stay
ready and go on serving and caching afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from condaproxy.cache.relay import Relay
from condaproxy.cache.tails import LocalTail, PrivateStream
from condaproxy.cache.transfer import ClientAbort, Download, Head
from tests.support.hostile import (
    Got,
    all_workers_started,
    fill,
    get_all,
    get_one,
    http,
    listed_channel,
    no_crash_in_log,
    tmpfs,
    wait_for,
)
from tests.support.processes import Proxy, Upstream

pytestmark = pytest.mark.integration

MiB = 1 << 20
BIG = "linux-64/big-1.0-0.conda"  # fits on the disk, until something else fills it
HUGE = "linux-64/huge-1.0-0.conda"  # more than the relay holds (16 MiB)
SMALL = "linux-64/small-1.0-0.conda"
LONG = "linux-64/long-1.0-0.conda"  # 18 MiB: what is left after 1 MiB is more than the relay holds
CLIENTS = 4  # at once, on their own connections


@pytest.fixture(scope="module")
def disk_files() -> dict[str, bytes]:
    sizes = {BIG: 6 * MiB, HUGE: 18 * MiB, SMALL: 256 * 1024, LONG: 18 * MiB}
    return {path: os.urandom(size) for path, size in sizes.items()}


@pytest.fixture
def upstream(tmp_path: Path, disk_files: dict[str, bytes]) -> Iterator[Upstream]:
    server = Upstream(listed_channel(tmp_path / "channel", disk_files)).start()
    yield server
    server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB filesystem for the proxy's cache."""
    with tmpfs(tmp_path / "cache", "24m") as path:
        yield path


def not_cached(proxy: Proxy, reason: str) -> float:
    text = httpx.get(f"{proxy.url}/metrics").text
    found = re.findall(rf'^condaproxy_not_cached_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return sum(float(v) for v in found)


def assert_nothing_kept(cache: Path, data: bytes) -> None:
    wait_for(lambda: not list((cache / "tmp").iterdir()), 5, "partial temp files removed")
    assert not list((cache / "blobs").rglob(hashlib.sha256(data).hexdigest()))


def assert_whole(got: list[Got], data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    for each in got:
        assert (each.status, each.complete, len(each.body)) == (200, True, len(data))
        assert each.sha256 == digest


def in_background_with(
    url: str, headers: list[dict[str, str] | None]
) -> tuple[threading.Thread, list[Got]]:
    """Concurrent GETs of `url` (one per entry of `headers`) in a thread; results when joined."""
    got: list[Got] = []
    thread = threading.Thread(
        target=lambda: got.extend(get_all(url, headers, timeout=30)), daemon=True
    )
    thread.start()
    return thread, got


def in_background(url: str, clients: int) -> tuple[threading.Thread, list[Got]]:
    return in_background_with(url, [None] * clients)


def written(cache: Path, at_least: int) -> bool:
    return any(p.stat().st_size >= at_least for p in (cache / "tmp").glob("*.partial"))


LAYOUTS = {
    # how the second group of clients reaches the download
    "one-worker": 1,  # the same process: they join it
    "two-workers": 2,  # uvicorn spreads the connections over its workers as it likes
    "second-process": 1,  # another serve process on the same cache: always the other side
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_disk_filling_up_mid_download_fails_no_client(
    upstream, start_proxy, small_disk: Path, disk_files, layout: str
) -> None:
    channels, extra = {"ch": {"upstream": upstream.url}}, "min_free = 1\n"
    first = start_proxy(channels, workers=LAYOUTS[layout], cache=small_disk, extra=extra)
    all_workers_started(first, LAYOUTS[layout])
    proxies = [first]
    if layout == "second-process":
        proxies.append(start_proxy(channels, cache=small_disk, extra=extra))
    second = proxies[-1]
    data = disk_files[BIG]
    assert httpx.get(f"{first.url}/ch/linux-64/repodata.json").status_code == 200
    upstream.mode("slow")  # 0.2 s per MiB: every client joins before the disk fills up
    one, got = in_background(f"{first.url}/ch/{BIG}", CLIENTS)
    # Under way: announced to other workers, or (one worker, nobody to tell) being written.
    started = lambda: any((small_disk / "inflight").glob("*.json")) or written(small_disk, 1)  # noqa: E731
    wait_for(started, 10, "download under way")
    two, got_too = in_background(f"{second.url}/ch/{BIG}", CLIENTS)
    # Another tenant of the disk fills it up while the download is being written.
    wait_for(lambda: written(small_disk, 2 * MiB), 10, "the download is being written")
    fill(small_disk)
    one.join(40)
    two.join(40)
    assert len(got + got_too) == 2 * CLIENTS
    assert_whole(got + got_too, data)
    assert_nothing_kept(small_disk, data)
    events = [e["event"] for p in proxies for e in p.events()]
    # Workers of one serve share a download; two separate serve processes on one cache
    # directory each run their own (one event each).
    assert events.count("not cached: disk full") == (2 if layout == "second-process" else 1)
    if layout != "second-process":  # (a second process resets the shared metrics directory)
        assert not_cached(first, "disk_full") == 1
    if layout == "one-worker":
        assert upstream.count("GET", f"/{BIG}") == 1, "the joined clients shared one download"

    # Space again: the proxy caches again.
    (small_disk / "filler").unlink()
    upstream.mode("ok")
    assert_whole([get_one(f"{second.url}/ch/{BIG}")], data)
    with http() as client:
        assert client.head(f"{first.url}/ch/{BIG}").headers["x-cache"] == "HIT"
        ready = client.get(f"{first.url}/readyz")
        assert ready.status_code == 200 and ready.json()["caching"] is True
    for proxy in proxies:
        no_crash_in_log(proxy.log())


def test_byte_range_waiting_when_the_disk_fills_stalls_no_other_client(
    upstream, start_proxy, small_disk: Path, disk_files
) -> None:
    """A range is served once the whole file is verified. If the disk fills up first, the
    range must not sit in the relay's window: that would stop the download (and every client
    on it) once the window is full."""
    proxy = start_proxy(
        {"ch": {"upstream": upstream.url}}, cache=small_disk, extra="min_free = 1\n"
    )
    data = disk_files[LONG]
    assert httpx.get(f"{proxy.url}/ch/linux-64/repodata.json").status_code == 200
    upstream.mode("slow")
    one, got = in_background(f"{proxy.url}/ch/{LONG}", 2)
    ranges = [{"range": "bytes=100-199"}, {"range": "bytes=-100"}]
    two, ranged = in_background_with(f"{proxy.url}/ch/{LONG}", ranges)
    wait_for(lambda: written(small_disk, MiB), 10, "the download is being written")
    fill(small_disk)
    one.join(40)
    two.join(40)
    assert_whole(got, data)
    assert [(r.status, r.complete, r.body) for r in ranged] == [
        (206, True, data[100:200]),
        (206, True, data[-100:]),
    ]
    assert_nothing_kept(small_disk, data)
    no_crash_in_log(proxy.log())


@pytest.mark.parametrize("workers", [1, 2])
def test_below_min_free_every_client_gets_the_file_and_nothing_is_kept(
    upstream, start_proxy, tmp_path: Path, disk_files, workers: int
) -> None:
    cache = tmp_path / "cache"
    proxy = start_proxy(
        {"ch": {"upstream": upstream.url}},
        workers=workers,
        cache=cache,
        extra='min_free = "100TB"\n',
    )
    all_workers_started(proxy, workers)
    data = disk_files[HUGE]  # more than the relay's 16 MiB window
    got = get_all(f"{proxy.url}/ch/{HUGE}", [None] * CLIENTS, timeout=30)
    assert_whole(got, data)
    assert_nothing_kept(cache, data)
    assert not_cached(proxy, "low_disk") >= 1
    assert any(e.get("event") == "not cached: low disk" for e in proxy.events())
    # Not kept: the next request is a miss again, fetched again.
    again = get_one(f"{proxy.url}/ch/{HUGE}")
    assert_whole([again], data)
    assert again.headers["x-cache"] == "MISS"
    with http() as client:
        ready = client.get(f"{proxy.url}/readyz")
    assert ready.status_code == 200 and ready.json()["caching"] is False
    no_crash_in_log(proxy.log())


def test_full_disk_keeps_the_proxy_ready_serving_hits_and_misses(
    upstream, start_proxy, small_disk: Path, disk_files
) -> None:
    proxy = start_proxy(
        {"ch": {"upstream": upstream.url}}, cache=small_disk, extra="min_free = 1\n"
    )
    with http(30) as client:
        assert client.get(f"{proxy.url}/ch/{SMALL}").content == disk_files[SMALL]
        # A small file is made durable after its client has it (the write-behind, within a
        # second): cached only then. Filling the disk before would keep it from the cache.
        deadline = time.monotonic() + 10
        while client.get(f"{proxy.url}/ch/{SMALL}").headers["x-cache"] != "HIT":
            assert time.monotonic() < deadline, "never cached"
            time.sleep(0.05)
        fill(small_disk)
        ready = client.get(f"{proxy.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["caching"] is False
        hit = client.get(f"{proxy.url}/ch/{SMALL}")
        assert (hit.headers["x-cache"], hit.content) == ("HIT", disk_files[SMALL])
    miss = get_one(f"{proxy.url}/ch/{HUGE}")
    assert_whole([miss], disk_files[HUGE])
    assert not_cached(proxy, "low_disk") + not_cached(proxy, "disk_full") >= 1
    assert_nothing_kept(small_disk, disk_files[HUGE])
    no_crash_in_log(proxy.log())


async def test_a_client_that_stops_reading_cannot_stall_a_download_on_a_full_disk() -> None:
    """In-process (the real wait is 30 s): with the disk full, the relay waits for a slow
    reader, but once no reader has moved for `stall` seconds it cuts the laggard off and the
    download goes on for the others."""
    data = os.urandom(64 * 1024)
    head = Head(len(data), "application/octet-stream", hashlib.sha256(data).hexdigest())
    d = Download("ch/linux-64/x-1.0-0.conda", None, asyncio.get_running_loop().create_future())
    d.head.set_result(head)
    d.relay = Relay(0, limit=4096, stall=0.05)

    def no_fallback() -> PrivateStream:
        raise AssertionError("no range here")

    reader, stalled = LocalTail(d, None, no_fallback), LocalTail(d, None, no_fallback)

    async def produce() -> None:  # what Downloads._to_relay does, chunk by chunk
        for i in range(0, len(data), 1024):
            d.written += 1024
            d.notify()
            await d.relay.put(data[i : i + 1024], d.slowest, d.cut_off)
        d.sha256, d.verified = head.sha256, True
        d.notify()

    async def read_all() -> bytes:
        return b"".join([chunk async for chunk in reader.chunks(0, len(data))])

    producer = asyncio.create_task(produce())
    stopped = stalled.chunks(0, len(data))
    first = await asyncio.wait_for(anext(stopped), 5)  # reads once, then never again
    assert data.startswith(first)
    body = await asyncio.wait_for(read_all(), 10)
    await asyncio.wait_for(producer, 5)
    assert body == data
    with pytest.raises(ClientAbort, match="stopped reading"):
        await anext(stopped)
    await reader.aclose()
    await stalled.aclose()
