"""Symbolic links planted in the cache under a running proxy never lead it to write outside.

A link where the index's database file is (to someone's SQLite database), where the index's
directory is, or where `blobs/` is (to a directory of someone's files, shaped like blob
fan-out directories, with eviction on): the proxy must not write to, create files in, or evict
from what the link points at. The index behind a link is no index of the proxy's: it is set
aside or begun afresh in a real directory; a link in place of one of the cache's directories
is replaced by the directory (only the link is removed).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import all_workers_started, listed_channel, no_crash_in_log
from tests.support.processes import Upstream

pytestmark = pytest.mark.integration

FILES = {f"linux-64/p{i}-1.0-0.conda": os.urandom(100_000) for i in range(4)}


def database_linked(cache: Path, outside: Path, aside: Path) -> None:
    (cache / "index" / "cache.db").unlink()
    (cache / "index" / "cache.db").symlink_to(outside / "theirs.db")


def index_dir_linked(cache: Path, outside: Path, aside: Path) -> None:
    os.rename(cache / "index", aside / "index")
    (cache / "index").symlink_to(outside)


def blobs_dir_linked(cache: Path, outside: Path, aside: Path) -> None:
    os.rename(cache / "blobs", aside / "blobs")
    (cache / "blobs").symlink_to(outside)


LINKS: dict[str, Callable[[Path, Path, Path], None]] = {
    "the index database": database_linked,
    "the index directory": index_dir_linked,
    "the blobs directory": blobs_dir_linked,
}


def contents(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("link", list(LINKS))
def test_a_link_planted_in_the_cache_is_never_written_through(
    tmp_path: Path, start_proxy, link: str, workers: int
) -> None:
    outside, aside = tmp_path / "someone", tmp_path / "aside"
    (outside / "ab" / "cd").mkdir(parents=True)
    aside.mkdir()
    (outside / "ab" / "cd" / "precious").write_bytes(os.urandom(5000))  # blob-shaped path
    (outside / "cache.db").write_bytes(b"")  # diskcache's file name, empty
    with sqlite3.connect(outside / "theirs.db") as con:
        con.execute("CREATE TABLE mine (x)")
        con.execute("INSERT INTO mine VALUES (1)")
    con.close()
    before = contents(outside)
    upstream = Upstream(listed_channel(tmp_path / "channel", FILES)).start()
    cache = tmp_path / "cache"
    try:
        proxy = start_proxy(
            {"ch": {"upstream": upstream.url}},
            cache=cache,
            workers=workers,
            extra="max_size = 250000",  # eviction has work to do
        )
        all_workers_started(proxy, workers)
        assert httpx.get(f"{proxy.url}/ch/linux-64/p0-1.0-0.conda", timeout=30).status_code == 200

        LINKS[link](cache, outside, aside)

        until = time.monotonic() + 3
        while time.monotonic() < until:
            for path, data in FILES.items():
                got = httpx.get(f"{proxy.url}/ch/{path}", timeout=30)
                assert got.status_code in (200, 503), got.text
                assert got.status_code == 503 or got.content == data
            meta = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30)
            assert meta.status_code in (200, 503), meta.text
        proxy.stop()
        assert contents(outside) == before  # nothing written, made or evicted there
        failed = proxy.events_where(lambda e: e.get("status", 0) >= 500 and e.get("status") != 503)
        assert failed == [], failed
        no_crash_in_log(proxy.log())
    finally:
        upstream.stop()
