"""The cache index goes bad under a running proxy, with one worker and with two.

The index (`cache/index/cache.db`, SQLite) only points at what the cache holds. At start a
damaged one was already set aside; once `serve` ran, the same damage (the file overwritten,
emptied, deleted or replaced, its -wal/-shm or its directory removed) left every request that
touched the index a 500 ("file is not a database") until a restart, or silently stopped caching
(commits went to a new file with no table while lookups read the unlinked one). A production
cache recovers by itself: the worker that meets it sets the index aside and starts a fresh one,
the other workers move to it, what the old one named is fetched again (and verified again).
Until then an answer is right or a 503 JSON, never a 500 or a wrong byte; the private uploads,
whose own index lives apart, stay listed and served throughout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import all_workers_started, listed_channel, no_crash_in_log, wait_for
from tests.support.processes import Proxy, Upstream

pytestmark = pytest.mark.integration

WRITE = "disk-write-token-1"
FILES = {f"linux-64/p{i}-1.0-0.conda": os.urandom(150_000) for i in range(3)}


def overwritten(index: Path) -> None:
    (index / "cache.db").write_bytes(os.urandom(16384))  # in place: the same inode


def emptied(index: Path) -> None:
    os.truncate(index / "cache.db", 0)


def deleted(index: Path) -> None:
    (index / "cache.db").unlink()


def replaced(index: Path) -> None:
    (index / "new").write_bytes(os.urandom(8192))
    os.replace(index / "new", index / "cache.db")


def wal_removed(index: Path) -> None:
    for name in ("cache.db-wal", "cache.db-shm"):
        (index / name).unlink(missing_ok=True)


def directory_removed(index: Path) -> None:
    shutil.rmtree(index)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "overwritten with garbage": overwritten,
    "emptied": emptied,
    "deleted": deleted,
    "replaced by garbage": replaced,
    "wal and shm removed": wal_removed,
    "directory removed": directory_removed,
}

# The file is there and no database: set aside. (A removed -wal/-shm may be made again by
# SQLite before anything fails; a removed file or directory leaves nothing to keep.)
SET_ASIDE = ("overwritten with garbage", "emptied", "replaced by garbage")


def right_or_503(url: str, want: bytes | None) -> int:
    got = httpx.get(url, timeout=30)
    if got.status_code == 503:
        assert got.json()["error"], got.text
    else:
        assert got.status_code == 200, got.text
        if want is not None:
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(want).digest()
    return got.status_code


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_the_index_going_bad_while_serving_recovers_by_itself(
    tmp_path: Path, start_proxy, damage: str, workers: int
) -> None:
    upstream = Upstream(listed_channel(tmp_path / "channel", FILES)).start()
    cache = tmp_path / "cache"
    try:
        proxy: Proxy = start_proxy(
            {"ch": {"upstream": upstream.url}},
            cache=cache,
            workers=workers,
            tokens={"ci": {"token": WRITE, "roles": {"ch": "write"}}},
        )
        all_workers_started(proxy, workers)
        private = build_package(
            Pkg("private-tool", "1.0", "h0", "linux-64"), tmp_path / "w", tmp_path / "out"
        )
        mine = private.read_bytes()
        posted = httpx.post(
            f"{proxy.url}/api/channels/ch/upload/{private.name}",
            content=mine,
            headers={"x-api-key": WRITE},
            timeout=60,
        )
        assert posted.status_code == 201, posted.text
        for _ in range(2 * workers):  # new connections: every worker has its handle open
            assert (
                httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30).status_code == 200
            )
            assert (
                httpx.get(f"{proxy.url}/ch/linux-64/p0-1.0-0.conda", timeout=30).status_code == 200
            )
        uploads_db = cache / "uploads" / "index" / "cache.db"
        uploads_before = uploads_db.stat().st_ino

        DAMAGE[damage](cache / "index")

        statuses = []
        until = time.monotonic() + 4
        while time.monotonic() < until:
            for path, want in [
                ("linux-64/repodata.json", None),
                ("noarch/repodata.json", None),
                *((p, FILES[p]) for p in FILES),
                (f"linux-64/{private.name}", mine),
            ]:
                statuses.append(right_or_503(f"{proxy.url}/ch/{path}", want))
        assert statuses.count(200) > len(statuses) // 2, statuses

        # Caching works again, in every worker: a file is stored once and then served as a hit.
        def hit() -> bool:
            got = httpx.get(f"{proxy.url}/ch/linux-64/p2-1.0-0.conda", timeout=30)
            assert got.status_code == 200 and got.content == FILES["linux-64/p2-1.0-0.conda"]
            return got.headers["x-cache"] == "HIT"

        wait_for(lambda: all(hit() for _ in range(2 * workers)), 15, "hits again")

        # The uploads were never touched: listed, served, merged into the repodata.
        assert uploads_db.stat().st_ino == uploads_before
        listed = httpx.get(f"{proxy.url}/api/channels/ch/packages", timeout=30).json()
        assert [p["filename"] for p in listed["packages"]] == [private.name]
        served = httpx.get(f"{proxy.url}/ch/linux-64/{private.name}", timeout=30)
        assert (served.status_code, served.content) == (200, mine)
        index = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30).json()
        assert private.name in index.get("packages.conda", {})
        assert httpx.get(f"{proxy.url}/readyz", timeout=30).json()["caching"] is True

        failed = proxy.events_where(lambda e: e.get("status", 0) >= 500 and e.get("status") != 503)
        assert failed == [], failed
        if damage in SET_ASIDE:  # kept for a look, never deleted
            # A file renamed over the index may still open while SQLite reads its pages from
            # the old index's WAL beside it: then it is used (and set aside later, on the
            # first page that is garbage). Either way it was noticed and logged.
            aside = [p for p in cache.iterdir() if p.name.startswith("index.damaged-")]
            replaced = any(
                str(e.get("event", "")).startswith("index replaced under") for e in proxy.events()
            )
            assert aside or (damage == "replaced by garbage" and replaced), proxy.log()[-3000:]
        no_crash_in_log(proxy.log())
    finally:
        upstream.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_whole_cache_directory_removed_while_serving_is_made_again(
    tmp_path: Path, start_proxy, workers: int
) -> None:
    """`rm -rf cache/` under a running proxy (a cleanup gone wrong): no 500, no wrong byte,
    and the cache works again by itself (it had silently stopped caching: commits went to a
    new index file with no table)."""
    upstream = Upstream(listed_channel(tmp_path / "channel", FILES)).start()
    cache = tmp_path / "cache"
    try:
        proxy = start_proxy({"ch": {"upstream": upstream.url}}, cache=cache, workers=workers)
        all_workers_started(proxy, workers)
        for path in FILES:
            assert httpx.get(f"{proxy.url}/ch/{path}", timeout=30).status_code == 200

        shutil.rmtree(cache, ignore_errors=True)  # the proxy may be making some again

        until = time.monotonic() + 3
        while time.monotonic() < until:
            for path in ("linux-64/repodata.json", *FILES):
                right_or_503(f"{proxy.url}/ch/{path}", FILES.get(path))

        def hit() -> bool:
            got = httpx.get(f"{proxy.url}/ch/linux-64/p1-1.0-0.conda", timeout=30)
            assert got.status_code == 200 and got.content == FILES["linux-64/p1-1.0-0.conda"]
            return got.headers["x-cache"] == "HIT"

        wait_for(lambda: all(hit() for _ in range(2 * workers)), 15, "hits again")
        assert (cache / "index" / "cache.db").exists()
        failed = proxy.events_where(lambda e: e.get("status", 0) >= 500 and e.get("status") != 503)
        assert failed == [], failed
        no_crash_in_log(proxy.log())
    finally:
        upstream.stop()
