"""The upload index (cache/uploads/index) under a running proxy whose disk is not what it wrote.

Unlike the cache index (index_recovery.py) it is the only record of the uploads: it is never
set aside nor started afresh, since an empty one would let the upstream's files of the
uploaded names through. What goes bad under it while the proxy runs is met this way:

- SQLite's errors (the file overwritten, emptied) are the OSError they are, a 503 JSON saying
  what to do, never a 500 (they were: "file is not a database" out of every request);
- an upload or a delete is refused (503) while the file at its path is not the one opened (it
  was removed, or replaced) or is no database any more (emptied, written over in place): it
  would be acknowledged into a file that is gone, or garbage, at the next start. Reads go on
  from the open one, the last known truth;
- a usable upload index put back at its path (a restore) is taken up by itself, by every
  worker within a second; an empty one (what a stray connection or open leaves) never is
  in place of one that holds uploads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from .entries import is_regular, open_regular
from .index_recovery import CHECK_EVERY, identity
from .sqlite_disk import disk_errors, open_diskcache

log = structlog.get_logger("condaproxy.storage.upload_index")

RESTORE = "restore cache/uploads/index from a backup"
SQLITE_HEADER = b"SQLite format 3\x00"


class UploadIndexDamaged(OSError):
    def __init__(self, why: str) -> None:
        super().__init__(errno.EIO, f"the upload index cannot be used ({why}); {RESTORE}")


def usable(db_file: str) -> int | None:
    """How many records `db_file` holds, if it is an upload index diskcache made, readable and
    whole; else None. Never through a link: a file of the proxy's own, or nothing."""
    if not is_regular(db_file):
        return None
    try:
        uri = f"{Path(db_file).absolute().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
            found = con.execute("PRAGMA quick_check(1)").fetchone()
            (rows,) = con.execute("SELECT count(*) FROM Cache").fetchone()
    except sqlite3.Error:  # no Cache table among them
        return None
    return int(rows) if found is not None and found[0] == "ok" else None


class UploadIndex:
    """The diskcache calls UploadStore makes, with the rules above."""

    def __init__(self, directory: Path, make_room: Callable[[], bool]) -> None:
        self._directory, self._make_room = directory, make_room
        self._file = str(directory / "cache.db")
        self._db = open_diskcache(directory, make_room)
        self._header_fd = _held_descriptor(self._file)
        self._identity = identity(self._file)
        self._next_check = time.monotonic() + CHECK_EVERY
        self.generation = 0  # moves when a restored index is taken up: memory of it is stale

    def close(self) -> None:
        self._db.close()
        _close(self._header_fd)  # after the database: its locks go with this descriptor

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            with disk_errors():
                yield
        except sqlite3.DatabaseError as exc:
            raise UploadIndexDamaged(str(exc)) from None

    def _look(self, now: bool = False) -> None:
        if not now and time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + CHECK_EVERY
        found = identity(self._file)
        if found is None or found == self._identity or os.path.islink(self._directory):
            return  # a link is never followed (opening would put a fresh directory there)
        rows = usable(self._file)
        if rows is None or (rows == 0 and self._held()):
            return  # never an empty index for one that holds uploads: they would be gone
        with self._errors():
            db = open_diskcache(self._directory, self._make_room)
        old, self._db, self._identity = self._db, db, found
        old_fd, self._header_fd = self._header_fd, _held_descriptor(self._file)
        self.generation += 1
        with contextlib.suppress(Exception):
            old.close()
        _close(old_fd)
        log.warning("upload index replaced while running (a restore?): now using it")

    def _held(self) -> bool:
        with contextlib.suppress(sqlite3.Error, OSError):
            return any(True for _ in self._db.iterkeys())
        return True

    def get(self, key: Any, default: Any = None) -> Any:
        self._look()
        with self._errors():
            return self._db.get(key, default)

    def iterkeys(self) -> list[Any]:
        self._look()
        with self._errors():
            return list(self._db.iterkeys())

    def set(self, key: Any, value: Any) -> None:
        with self._errors():
            self._db.set(key, value)

    def incr(self, key: Any, default: int = 0) -> None:
        with self._errors():
            self._db.incr(key, default=default)

    @contextlib.contextmanager
    def transact(self) -> Iterator[None]:
        """A change: refused while the file at the index's path is not the one open, or no
        longer a database (emptied or written over in place: SQLite, writing to its journal,
        may not notice before a checkpoint, and the change would be acknowledged into it)."""
        self._look(now=True)
        if identity(self._file) != self._identity:
            raise UploadIndexDamaged("its file was removed or replaced while the proxy ran")
        if not self._has_header():
            raise UploadIndexDamaged("its file was emptied or written over while the proxy ran")
        with self._errors(), self._db.transact():
            yield

    def _has_header(self) -> bool:
        """Whether the open file still starts as every SQLite database does. Read through a
        descriptor held as long as the database is open: closing any other descriptor on the
        file would drop SQLite's POSIX locks on it (a worker then died of SIGBUS)."""
        try:
            return os.pread(self._header_fd, len(SQLITE_HEADER), 0) == SQLITE_HEADER
        except OSError:
            return False


def _held_descriptor(db_file: str) -> int:
    """A descriptor on the database file, for reading its header (-1: none could be had)."""
    try:
        return open_regular(db_file)
    except OSError:
        return -1


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
