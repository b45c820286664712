"""The upload index goes bad under a running proxy, with one worker and with two.

The upload index (`cache/uploads/index/cache.db`) is the only record of the uploads: unlike
the cache index it is never set aside (an empty one would let the upstream's files of the
uploaded names through). Overwritten or emptied while `serve` ran, it made every request a 500
("file is not a database"); deleted or replaced, uploads went on being acknowledged (201) into
a file gone at the next start. Now: an answer is right or a 503 JSON saying to restore the
index, never a 500, never the upstream's file of an uploaded name; no upload is acknowledged
into a file that is not at the index's path, or is no database any more (emptied or written
over in place: with two workers, one used to answer 503 while the other acknowledged uploads
into the emptied file); and the index restored from a backup is taken up
by itself, in every worker, with no restart.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import all_workers_started, listed_channel, no_crash_in_log, wait_for
from tests.support.processes import Upstream

pytestmark = pytest.mark.integration

WRITE = "disk-write-token-2"


def overwritten(db: Path) -> None:
    db.write_bytes(os.urandom(16384))


def emptied(db: Path) -> None:
    os.truncate(db, 0)


def deleted(db: Path) -> None:
    db.unlink()


def replaced(db: Path) -> None:
    (db.parent / "new").write_bytes(os.urandom(8192))
    os.replace(db.parent / "new", db)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "overwritten with garbage": overwritten,
    "emptied": emptied,
    "deleted": deleted,
    "replaced by garbage": replaced,
}


def backup(db: Path, to: Path) -> None:
    with (
        contextlib.closing(sqlite3.connect(db)) as src,
        contextlib.closing(sqlite3.connect(to)) as dst,
    ):
        src.backup(dst)


def restore(saved: Path, db: Path) -> None:
    """What an operator does: the backup put in place, the old file's journal gone with it."""
    for tail in ("-wal", "-shm"):
        Path(f"{db}{tail}").unlink(missing_ok=True)
    os.replace(saved, db)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_upload_index_is_a_503_never_the_upstream_file_and_a_restore_is_taken_up(
    tmp_path: Path, start_proxy, damage: str, workers: int
) -> None:
    package = build_package(
        Pkg("internal-tool", "1.0", "h0", "linux-64"), tmp_path / "w", tmp_path / "o"
    )
    mine = package.read_bytes()
    impostor = os.urandom(60_000)  # the upstream's file of the uploaded name
    name = f"linux-64/{package.name}"
    files = {name: impostor, "linux-64/other-1.0-0.conda": os.urandom(60_000)}
    upstream = Upstream(listed_channel(tmp_path / "channel", files)).start()
    cache = tmp_path / "cache"
    try:
        proxy = start_proxy(
            {"ch": {"upstream": upstream.url}},
            cache=cache,
            workers=workers,
            tokens={"ci": {"token": WRITE, "roles": {"ch": "write"}}},
        )
        all_workers_started(proxy, workers)

        def upload() -> httpx.Response:
            return httpx.post(
                f"{proxy.url}/api/channels/ch/upload/{package.name}",
                content=mine,
                params={"force": "true"},
                headers={"x-api-key": WRITE},
                timeout=60,
            )

        assert upload().status_code == 201
        db = cache / "uploads" / "index" / "cache.db"
        backup(db, tmp_path / "saved.db")

        DAMAGE[damage](db)

        statuses: list[int] = []
        until = time.monotonic() + 3
        while time.monotonic() < until:
            got = httpx.get(f"{proxy.url}/ch/{name}", timeout=30)
            statuses.append(got.status_code)
            assert got.status_code in (200, 503), got.text
            if got.status_code == 200:
                assert got.content == mine  # never the upstream's file of that name
            else:
                assert "upload index" in got.json()["error"]
            meta = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30)
            assert meta.status_code in (200, 503), meta.text
            if meta.status_code == 200:
                records = meta.json()["packages.conda"]
                assert records[package.name]["size"] == len(mine)
            posted = upload()
            assert posted.status_code in (201, 503), posted.text
            if posted.status_code == 201:  # never into a file that is gone, or no database
                assert db.exists() and db.read_bytes()[:16] == b"SQLite format 3\x00", damage

        restore(tmp_path / "saved.db", db)

        def served() -> bool:
            got = httpx.get(f"{proxy.url}/ch/{name}", timeout=30)
            assert got.status_code in (200, 503), got.text
            assert got.status_code != 200 or got.content == mine
            return got.status_code == 200 and upload().status_code == 201

        wait_for(lambda: all(served() for _ in range(2 * workers)), 15, "the restored index used")
        listed = httpx.get(f"{proxy.url}/api/channels/ch/packages", timeout=30).json()
        assert [p["filename"] for p in listed["packages"]] == [package.name]
        failed = proxy.events_where(lambda e: e.get("status", 0) >= 500 and e.get("status") != 503)
        assert failed == [], failed
        no_crash_in_log(proxy.log())
    finally:
        upstream.stop()
