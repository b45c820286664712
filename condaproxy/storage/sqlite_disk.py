"""The SQLite databases under the cache (the index, the upload index): opening one on a disk
that may be full, a database file that may be a link, and SQLite's errors as the OSErrors they
are (a full disk, a failing one, a lock held too long), so every path that copes with a disk that
cannot take a write copes with these the same way."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import structlog

from .entries import ensure_dir, is_regular, open_own

log = structlog.get_logger("condaproxy.storage.index")


class IndexFull(OSError):
    """SQLite could not write: its disk is full (or failing). An OSError with ENOSPC (EIO)."""


class IndexBusy(OSError):
    """The index stayed locked (by another process, a backup, an sqlite3 shell) longer than
    diskcache waits: an OSError with EBUSY, a failure of the local disk to retry."""


@contextlib.contextmanager
def disk_errors() -> Iterator[None]:
    """SQLite's "database or disk is full", "disk I/O error" and a lock held too long as the
    OSErrors they are: whoever copes with a disk that cannot take a write copes with these."""
    try:
        yield
    except (diskcache.Timeout, sqlite3.OperationalError) as exc:
        raise as_disk_error(exc) from None


def as_disk_error(exc: BaseException) -> BaseException:
    """disk_errors()'s mapping, for a caller on the hot path (no context manager to build)."""
    if isinstance(exc, diskcache.Timeout):
        return IndexBusy(errno.EBUSY, f"the index is locked by another process: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "full" in text:
            return IndexFull(errno.ENOSPC, f"the index cannot grow: {text}")
        if "disk I/O error" in text:
            return IndexFull(errno.EIO, f"the index cannot be written: {text}")
        if "locked" in text:
            return IndexBusy(errno.EBUSY, f"the index is locked: {text}")
    return exc


def nothing_to_free() -> bool:
    return False


# Room kept beside each database, released when it cannot be opened otherwise: a database all
# processes closed has no -wal and -shm files, and even reading it must make them.
RESERVE_NAME = "room.reserve"
RESERVE_BYTES = 1 << 20


def open_diskcache(directory: Path, make_room: Callable[[], bool] = nothing_to_free) -> Any:
    """A diskcache over `directory`. diskcache writes its settings every time it opens, so on
    a full disk opening fails: each time it does, `make_room()` frees some space (False:
    nothing left to free) and the open is tried again. With nothing left to free, a database
    already made is opened as it is (`_OpenedAsIs`: no write; each later write fails as on any
    full disk), after releasing the room kept beside it if even that needs a byte. The directory
    is made a real one (a link in its place is removed), and a database file that is no
    regular file (a link to another database, a directory) is damage: it is never opened nor
    written through."""
    ensure_dir(directory, directory.parent)
    db_file = directory / "cache.db"
    if os.path.lexists(db_file) and not is_regular(db_file):
        raise sqlite3.DatabaseError(f"{db_file.name} is not a regular file")
    while True:
        try:
            with disk_errors():
                db = diskcache.Cache(str(directory), **OUR_SETTINGS)
        except IndexFull:
            if not make_room():
                return _open_without_room(directory)
        else:
            _keep_reserve(directory)
            return db


def _open_without_room(directory: Path) -> Any:
    for last in (False, True):
        try:
            with disk_errors():
                return _OpenedAsIs(directory)
        except IndexFull:
            if last or not _release_reserve(directory):
                raise
    raise AssertionError("unreachable")


def _keep_reserve(directory: Path) -> None:
    """Make the room kept beside the database, if it is missing and the disk has it."""
    path = directory / RESERVE_NAME
    with contextlib.suppress(OSError):
        found = os.lstat(path)
        if stat.S_ISREG(found.st_mode) and found.st_size >= RESERVE_BYTES:
            return
    try:
        fd = open_own(path, os.O_WRONLY)
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)  # no room for it now: the next open tries again
    finally:
        os.close(fd)


def _release_reserve(directory: Path) -> bool:
    try:
        os.unlink(directory / RESERVE_NAME)
    except OSError:
        return False
    log.warning("disk full: released the room kept to open the index", directory=str(directory))
    return True


class _OpenedAsIs(diskcache.Cache):  # type: ignore[misc]
    """A diskcache over a database already made, opened without writing to it: its settings
    are read, not written back, and its tables not created (diskcache.Cache.__init__ does
    both, each time). What the Cache methods need is set as __init__ sets it: the settings as
    attributes, the Disk, the page size. Reads work; a write fails as every write on a full
    disk does (IndexFull through disk_errors)."""

    def __init__(self, directory: Path) -> None:
        self._directory = str(directory)
        self._timeout = 60
        self._local = threading.local()
        self._txn_id = None
        try:
            stored = dict(self._sql("SELECT key, value FROM Settings").fetchall())
            self._sql("SELECT count(*) FROM Cache").fetchall()
        except sqlite3.OperationalError as exc:
            self.close()
            if "no such table" in str(exc):  # never made: making it needs room
                raise IndexFull(errno.ENOSPC, "the index cannot be made: disk full") from None
            raise
        except BaseException:
            self.close()
            raise
        settings = {**diskcache.DEFAULT_SETTINGS, **stored, **OUR_SETTINGS}
        disk = {key[5:]: value for key, value in settings.items() if key.startswith("disk_")}
        self._disk = diskcache.Disk(self._directory, **disk)
        for key, value in settings.items():
            object.__setattr__(self, key, value)
        ((self._page_size,),) = self._sql("PRAGMA page_size").fetchall()


OUR_SETTINGS: dict[str, Any] = {"size_limit": 2**40, "eviction_policy": "none"}
