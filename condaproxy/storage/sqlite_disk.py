"""The SQLite databases under the cache (the index, the upload index): opening one on a disk
that may be full, a database file that may be a link, and SQLite's errors as the OSErrors they
are (a full disk, a failing one, a lock held too long), so every path that copes with a disk that
cannot take a write copes with these the same way."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache

from .entries import ensure_dir, is_regular


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


def open_diskcache(directory: Path, make_room: Callable[[], bool] = nothing_to_free) -> Any:
    """A diskcache over `directory`. diskcache writes its settings every time it opens, so on
    a full disk opening fails: each time it does, `make_room()` frees some space (False:
    nothing left to free) and the open is tried again. The directory is made a real one (a
    link in its place is removed), and a database file that is no regular file (a link to
    another database, a directory) is damage: it is never opened nor written through."""
    ensure_dir(directory, directory.parent)
    db_file = directory / "cache.db"
    if os.path.lexists(db_file) and not is_regular(db_file):
        raise sqlite3.DatabaseError(f"{db_file.name} is not a regular file")
    while True:
        try:
            with disk_errors():
                return diskcache.Cache(str(directory), size_limit=2**40, eviction_policy="none")
        except IndexFull:
            if not make_room():
                raise
