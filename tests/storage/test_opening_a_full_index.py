"""Opening a SQLite database under the cache when its disk is full and nothing can be freed
(storage/sqlite_disk.open_diskcache): diskcache writes its settings at every open, which a full
disk refuses. The database is then opened as it is: what it holds is read, a write is the
IndexFull every full-disk path copes with, and once the disk has room again writes go through.
A database no process has open needs room even to be read (SQLite makes its -wal and -shm
files): the room kept beside it is released for that.

A small tmpfs filled by another tenant (needs root, as in CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from condaproxy.storage.sqlite_disk import (
    RESERVE_BYTES,
    RESERVE_NAME,
    IndexFull,
    disk_errors,
    open_diskcache,
)
from tests.support.hostile import fill, tmpfs


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "4m") as path:
        yield path


def made(directory: Path, entries: int = 20) -> None:
    db = open_diskcache(directory)
    for n in range(entries):
        db.set(f"file:{n}", {"sha256": f"{n:064x}"})
    db.close()


def test_a_database_made_before_opens_on_a_full_disk_and_reads(disk: Path) -> None:
    directory = disk / "index"
    made(directory)
    assert (directory / RESERVE_NAME).stat().st_size == RESERVE_BYTES
    filler = fill(disk)
    opened: list[object] = []
    freed: list[bool] = []

    def make_room() -> bool:
        freed.append(True)
        return False  # nothing the proxy may evict

    db = open_diskcache(directory, make_room)
    opened.append(db)
    assert freed == [True]
    assert db.get("file:7") == {"sha256": f"{7:064x}"}
    assert sorted(db.iterkeys())[:2] == ["file:0", "file:1"]
    assert not (directory / RESERVE_NAME).exists(), "the room kept was not used"
    fill(disk)  # what the release freed, taken by the other tenant too
    with pytest.raises(IndexFull), disk_errors():
        for n in range(200):
            db.set(f"new:{n}", "x" * 2000)
    filler.unlink()
    (disk / "filler").unlink(missing_ok=True)
    db.set("after", 1)  # room again: the same database takes writes
    assert db.get("after") == 1
    db.close()
    again = open_diskcache(directory)
    assert again.get("after") == 1 and again.get("file:3") is not None
    assert (directory / RESERVE_NAME).stat().st_size == RESERVE_BYTES, "room not kept again"
    again.close()


def test_a_database_open_elsewhere_opens_on_a_full_disk_without_the_reserve(disk: Path) -> None:
    """Another worker has it open (its -wal and -shm exist): opening reads without a byte more."""
    directory = disk / "index"
    made(directory)
    other = open_diskcache(directory)
    assert other.get("file:1") is not None
    fill(disk)
    db = open_diskcache(directory)
    assert db.get("file:2") == {"sha256": f"{2:064x}"}
    assert (directory / RESERVE_NAME).exists(), "the room was released when it was not needed"
    db.close()
    other.close()


def test_no_database_on_a_full_disk_is_the_full_disk_error(disk: Path) -> None:
    fill(disk)
    with pytest.raises(OSError) as raised:
        open_diskcache(disk / "index")
    assert isinstance(raised.value, IndexFull) or raised.value.errno == 28, raised.value


def test_the_reserve_is_never_made_through_a_link(disk: Path, tmp_path: Path) -> None:
    directory = disk / "index"
    made(directory)
    (directory / RESERVE_NAME).unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, directory / RESERVE_NAME)
    open_diskcache(directory).close()
    assert victim.read_bytes() == b"keep"
    assert not (directory / RESERVE_NAME).is_symlink()


def test_a_reserve_cut_short_is_made_whole_again(disk: Path) -> None:
    """A crash between making the file and reserving its blocks leaves it empty."""
    directory = disk / "index"
    made(directory)
    (directory / RESERVE_NAME).write_bytes(b"")
    open_diskcache(directory).close()
    assert (directory / RESERVE_NAME).stat().st_size == RESERVE_BYTES
