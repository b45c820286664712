"""A full disk, index included, fails no request that does not need to store anything, and
refuses an upload whole.

The cache lives on a small tmpfs that another tenant fills up. Then the SQLite index cannot
grow either: a revalidation the upstream answers 304, a lookup of a file the upstream does not
have (whose 404 the proxy would remember), or the bookkeeping of a derived variant must still
get their answers (the stored snapshot, a 404), never a 500 or a request that hangs. An upload
that does not fit is a 507 JSON naming the full disk, and leaves the list of uploads, the
upload store and the temp directory as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import (
    all_workers_started,
    fill,
    get_one,
    http,
    kill_a_worker,
    listed_channel,
    no_crash_in_log,
    tmpfs,
)
from tests.support.processes import ROOT, Proxy, Upstream, free_port, write_config

pytestmark = pytest.mark.integration

SMALL = "linux-64/small-1.0-0.conda"
WRITE = "ci-write-token-1"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    files = {SMALL: os.urandom(300_000)}
    server = Upstream(listed_channel(tmp_path / "channel", files)).start()
    yield server
    server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "cache", "8m") as path:
        yield path


def start(start_proxy, upstream: Upstream, cache: Path, workers: int = 1) -> Proxy:
    return start_proxy(
        {"ch": {"upstream": upstream.url}},
        ttl=1,
        workers=workers,
        cache=cache,
        extra="min_free = 1\n",
        tokens={"ci": {"token": WRITE, "roles": {"ch": "write"}}},
    )


def errors(proxy: Proxy) -> list[dict[str, object]]:
    return [e for e in proxy.events() if e.get("level") == "error"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_index_fails_no_revalidation_and_no_404(
    upstream, start_proxy, small_disk: Path, workers: int
) -> None:
    proxy = all_workers_started(start(start_proxy, upstream, small_disk, workers), workers)
    url = f"{proxy.url}/ch/linux-64/repodata.json"
    with http() as client:
        before = client.get(url, headers={"accept-encoding": "identity"})
        assert before.status_code == 200
        fill(small_disk)
        time.sleep(1.2)  # past repodata_ttl: the next request revalidates (304 upstream)
        again = client.get(url, headers={"accept-encoding": "identity"})
        assert (again.status_code, again.content) == (200, before.content), again.text
    # A file the upstream does not have: its 404 cannot be remembered, but it is still a 404.
    missing = get_one(f"{proxy.url}/ch/linux-64/missing-1.0-0.conda", timeout=10)
    assert missing.status == 404, missing.body
    got = get_one(f"{proxy.url}/ch/{SMALL}", timeout=10)
    assert (got.status, got.complete, len(got.body)) == (200, True, 300_000)
    assert not [e for e in errors(proxy) if e.get("event") == "request failed"]
    no_crash_in_log(proxy.log())

    (small_disk / "filler").unlink()  # space again: the proxy caches again
    assert get_one(f"{proxy.url}/ch/{SMALL}").status == 200
    with http() as client:
        assert client.get(url).status_code == 200
        assert client.head(f"{proxy.url}/ch/{SMALL}").headers["x-cache"] == "HIT"


def package(tmp_path: Path, name: str, size: int) -> Path:
    return build_package(
        Pkg(name, "1.0", "h0", "linux-64", payload_size=size), tmp_path / "w", tmp_path / "out"
    )


def stored_uploads(cache: Path) -> list[str]:
    places = (cache / "uploads" / "blobs", cache / "tmp")
    return sorted(str(p) for d in places for p in d.rglob("*") if p.is_file())


def listing(proxy: Proxy) -> list[str]:
    r = httpx.get(f"{proxy.url}/api/channels/ch/packages")
    return sorted(p["filename"] for p in r.json()["packages"])


def test_an_upload_that_does_not_fit_is_a_507_and_leaves_nothing(
    upstream, start_proxy, small_disk: Path, tmp_path: Path
) -> None:
    proxy = start(start_proxy, upstream, small_disk)
    headers = {"x-api-key": WRITE}
    first = package(tmp_path, "first", 1000)
    big = package(tmp_path, "big", 2 << 20)  # random payload: does not compress
    other = package(tmp_path, "other", 2 << 20)
    api = f"{proxy.url}/api/channels/ch"
    with http(30) as client:
        r = client.post(f"{api}/upload/{first.name}", content=first.read_bytes(), headers=headers)
        assert r.status_code == 201, r.text
    before, kept = listing(proxy), stored_uploads(small_disk)
    fill(small_disk)
    raw = httpx.post(
        f"{api}/upload/{big.name}", content=big.read_bytes(), headers=headers, timeout=30
    )
    files = [("files", (p.name, p.read_bytes())) for p in (big, other)]
    multi = httpx.post(f"{api}/files", files=files, headers=headers, timeout=30)
    for r in (raw, multi):
        assert r.status_code == 507, r.text
        body = json.loads(r.content)
        assert body["status"] == 507 and "disk is full" in body["error"], body
    assert listing(proxy) == before
    assert stored_uploads(small_disk) == kept
    refusals = [e for e in proxy.events() if e.get("event") == "upload refused"]
    assert [e["status"] for e in refusals] == [507, 507]
    no_crash_in_log(proxy.log())

    (small_disk / "filler").unlink()
    r = httpx.post(
        f"{api}/upload/{big.name}", content=big.read_bytes(), headers=headers, timeout=30
    )
    assert r.status_code == 201, r.text
    assert listing(proxy) == sorted([first.name, big.name])


def test_a_restart_on_a_full_disk_starts_and_serves(
    upstream, start_proxy, small_disk: Path
) -> None:
    """Opening the index writes to it: on a full disk a cached file makes room (it can be
    fetched again), rather than the proxy failing to start, as a pod restarted on a full
    volume would, again and again."""
    proxy = start(start_proxy, upstream, small_disk)
    url = f"{proxy.url}/ch/linux-64/repodata.json"
    with http() as client:
        before = client.get(url)
        assert before.status_code == 200
        assert client.get(f"{proxy.url}/ch/{SMALL}").status_code == 200  # cached
    proxy.stop()
    fill(small_disk)
    again = start(start_proxy, upstream, small_disk)
    with http() as client:
        assert client.get(f"{again.url}/readyz").status_code == 200
        assert client.get(f"{again.url}/ch/linux-64/repodata.json").content == before.content
    got = get_one(f"{again.url}/ch/{SMALL}", timeout=10)
    assert (got.status, got.complete, len(got.body)) == (200, True, 300_000)
    no_crash_in_log(again.log())


# A worker starts on a full disk, with nothing the proxy may evict to make room. Opening
# diskcache writes its settings every time: the start failed (a pod restarted on a full volume
# logged a traceback and never came up), and with two workers, the one uvicorn put in place of
# a worker that died (or was slow to answer its ping) failed at once and uvicorn stopped the
# whole proxy ("Child process failed to start"). Now an index that cannot take a write is
# opened as it is (storage/sqlite_disk.py): hits are served, misses stream uncached.


def serves(proxy: Proxy) -> None:
    """Metadata and a package, complete, from whichever worker answers."""
    with http() as client:
        for _ in range(4):
            assert client.get(f"{proxy.url}/readyz").status_code == 200
            r = client.get(f"{proxy.url}/ch/linux-64/repodata.json")
            assert r.status_code == 200 and SMALL.split("/")[1] in r.text, r.text[:300]
    for _ in range(4):
        got = get_one(f"{proxy.url}/ch/{SMALL}", timeout=10)
        assert (got.status, got.complete, len(got.body)) == (200, True, 300_000), got.body[:300]


def answers(proxy: Proxy) -> None:
    """With no room at all: ready, and each answer the file or a 503 saying the disk is full
    (metadata never cached needs room to be stored), never a 500 or a dropped connection."""
    with http() as client:
        for _ in range(4):
            assert client.get(f"{proxy.url}/readyz").status_code == 200
            r = client.get(f"{proxy.url}/ch/linux-64/repodata.json")
            if r.status_code != 200:
                assert r.status_code == 503 and "No space left" in r.json()["error"], r.text
    for _ in range(4):
        got = get_one(f"{proxy.url}/ch/{SMALL}", timeout=10)
        if got.status != 200:
            assert got.status == 503 and b"No space left" in got.body, got.body[:300]
        assert (got.complete and len(got.body) == 300_000) or got.status == 503


def no_blobs(disk: Path) -> None:
    """Nothing left that eviction could free to make room."""
    for blob in (disk / "blobs").rglob("*"):
        if blob.is_file():
            blob.unlink()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("used", [False, True], ids=["never used", "used"])
def test_a_start_on_a_full_disk_with_nothing_to_evict_serves(
    upstream, start_proxy, small_disk: Path, workers: int, used: bool
) -> None:
    """Before: the start failed (a traceback; uvicorn exits). Now the proxy comes up, answers,
    and serves again as soon as the disk has room, with no restart."""
    proxy = all_workers_started(start(start_proxy, upstream, small_disk, workers), workers)
    if used:
        serves(proxy)
    proxy.stop()
    no_blobs(small_disk)
    filler = fill(small_disk)
    again = all_workers_started(start(start_proxy, upstream, small_disk, workers), workers)
    answers(again)
    filler.unlink()
    serves(again)
    no_crash_in_log(again.log())


def test_a_worker_restarted_on_a_full_disk_serves(upstream, start_proxy, small_disk: Path) -> None:
    proxy = all_workers_started(start(start_proxy, upstream, small_disk, 2), 2)
    serves(proxy)
    no_blobs(small_disk)
    filler = fill(small_disk)
    for _ in range(2):  # its index is open in the other worker: no -wal to make
        kill_a_worker(proxy)
        answers(proxy)
    filler.unlink()
    serves(proxy)
    no_crash_in_log(proxy.log())


def test_a_new_cache_on_a_full_disk_is_one_line_naming_it(small_disk: Path, tmp_path: Path) -> None:
    """No index yet and no room to make one: `serve` stops at once with one line saying so,
    not a traceback from each worker."""
    fill(small_disk)
    config = write_config(
        tmp_path / "proxy.toml", small_disk / "cache", {"ch": {"upstream": "http://127.0.0.1:9"}}
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "condaproxy",
            "serve",
            "--config",
            str(config),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cache.path" in lines[0] and str(small_disk / "cache") in lines[0], lines
    assert "disk is full" in lines[0], lines
    assert "Traceback" not in done.stdout + done.stderr
