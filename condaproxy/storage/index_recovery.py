"""An index that goes bad while the proxy runs: what counts as broken, and how it is replaced.

The index only points at what the cache holds (blobs are named by their sha256 and verified
before they are served), so losing it costs refetches, never a wrong byte. At start a damaged
index is set aside (index.py); this is the same rule at run time, for what happens under a
running proxy: the file truncated, overwritten or deleted, its -wal/-shm removed, its directory
removed, the file made read-only. Each left every request touching the index a 500 or a 503
until a restart (or, for a deleted file, caching silently stopped: commits went to a new,
empty file with no table while lookups read the unlinked one).

The upload index (cache/uploads/index) is never handled here: it is the only record of the
uploads, and an empty one would let the upstream's files of their names through.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from .entries import open_own

log = structlog.get_logger("condaproxy.storage.index")

# What SQLite says when the file under a connection is no longer the database it opened.
_DAMAGED = ("no such table", "malformed", "not a database")
# What it says when it could not use the file: after a -wal or -shm was removed, the directory
# removed or the file made read-only, but also on a full or failing disk (SQLite says "disk
# I/O error" for a write a full tmpfs refused). Broken only when the files show it.
_FAILED = ("disk i/o error", "unable to open database file", "readonly database")

CHECK_EVERY = 1.0  # seconds between two looks at whether the index file is still ours


class IndexDamaged(OSError):
    """The index could not be used nor replaced (yet): an OSError with EIO, a failure of the
    local disk (a 503 to retry), never a 500."""

    def __init__(self, why: str) -> None:
        super().__init__(errno.EIO, f"the cache index is damaged: {why}")


def damaged(exc: BaseException | None) -> bool:
    """The file itself is no usable database (not merely our handle on it)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def broken(exc: BaseException | None, db_file: str, opened: tuple[int, int] | None) -> bool:
    """Whether `exc` says the index at `db_file` (which was `opened`), or this process's
    handle on it, stopped working for good: its file no database, or no longer the one opened,
    or its -wal or -shm gone. A full, locked or failing disk is not: it passes, and is a 503."""
    if exc is None:
        return False
    text = str(exc).lower()
    if damaged(exc) or any(t in text for t in _DAMAGED):
        return True
    failed = any(t in text for t in _FAILED) or (
        isinstance(exc, OSError) and exc.errno == errno.EIO
    )
    if not failed:
        return False
    if identity(db_file) != opened:
        return True
    return not all(os.path.exists(db_file + tail) for tail in ("-wal", "-shm"))


def identity(path: str) -> tuple[int, int] | None:
    """Which file is at `path` (device, inode); None when none is."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@contextlib.contextmanager
def held(lock_path: Path) -> Iterator[None]:
    """An exclusive flock on `lock_path` (a descriptor of its own: excludes other threads as
    well as other workers), so one process replaces the index while the others wait, then
    find it replaced. A cache directory removed under the proxy is made again."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_own(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def set_aside(directory: Path) -> Path | None:
    """Rename the index directory `<name>.damaged-<time>` (kept for a look, never deleted);
    None when there was none to move."""
    stamp = f"{time.time():.0f}"
    aside = directory.with_name(f"{directory.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        aside = directory.with_name(f"{directory.name}.damaged-{stamp}-{n}")
        n += 1
    try:
        directory.rename(aside)
    except FileNotFoundError:
        return None
    return aside


def log_replaced(what: str, aside: Path | None) -> None:
    if aside is not None or what.startswith("damaged"):
        log.error(
            "index damaged while running: set aside, continuing with an empty one",
            reason=what[:300],
            moved_to=str(aside) if aside else None,
        )
    else:
        log.warning("index replaced under the running proxy: now using it", reason=what)
