"""The metadata index: which blob holds which URL, repodata validators, upstream origins.

diskcache (SQLite) makes it durable and safe across uvicorn workers; a small cachetools LRU in
front keeps hot package lookups off SQLite. An entry is written only after its blob is durable.
When SQLite cannot grow (its disk is full), a write raises `IndexFull` (sqlite_disk.py), an
OSError with ENOSPC: every path that copes with a full disk copes with a full index the same way.
Keys are strings `<table>:<key>` (diskcache stores a str key as is; a tuple key is pickled on
every lookup, which cost more than the lookup). Indexes written with tuple keys are converted
once, when opened.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache
from cachetools import LRUCache

from ..rules.rewrite import Origins
from . import index_recovery as recovery
from .entries import create_new
from .keys import MetaKey
from .sqlite_disk import IndexFull, as_disk_error, disk_errors, nothing_to_free, open_diskcache


@dataclass(frozen=True)
class FileEntry:
    """An immutable file (package or shard) in the blob store."""

    sha256: str
    size: int
    stored_at: float
    content_type: str = "application/octet-stream"
    local: bool = False  # derived from uploads (merged shards): never purged or evicted


@dataclass(frozen=True)
class Variant:
    sha256: str  # its blob's name: the content's sha256, or a name derived from its inputs
    size: int
    inflated: int = 0  # a .zst variant: the size of the JSON inside (0: unknown)
    content: str = ""  # the content's sha256 when `sha256` is a name from inputs (at_rest.py)
    stamp: int = 0  # the file as its writer placed it (blobs.placed_stamp; 0: not recorded)

    @property
    def content_sha256(self) -> str:
        return self.content or self.sha256


@dataclass(frozen=True)
class MetaEntry:
    """One revalidated resource (a subdir's repodata, a shard index, channeldata.json ...)."""

    source_url: str  # the upstream URL that answered (e.g. repodata.json.zst or .json)
    etag: str | None  # upstream validators, sent back on revalidation
    last_modified: str | None
    fetched_at: float  # last time upstream confirmed it (200 or 304)
    changed_at: float  # when this content first arrived: our Last-Modified
    digest: str  # identifies the content: our ETags derive from it
    variants: dict[str, Variant] = field(default_factory=dict)
    origins: Origins = field(default_factory=Origins)


def _key(table: str, key: str) -> str:
    return f"{table}:{key}"


class Index:
    def __init__(
        self,
        directory: Path,
        hot_entries: int = 4096,
        make_room: Callable[[], bool] = nothing_to_free,
        set_aside_damaged: bool = False,
    ) -> None:
        """With `set_aside_damaged` (only the one process on the cache may), an index that is
        no SQLite database any more (garbage, cut short by a crash or a careless copy) is
        renamed `<directory>.damaged-<time>` and a fresh one started: the index only points at
        what the cache holds, so what it named is fetched again when asked, where a damaged
        index would keep the proxy from starting at all."""
        try:
            self._db = open_diskcache(directory, make_room)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) or not set_aside_damaged:
                raise  # locked, full or unreadable: not known to be damaged
            aside = directory.with_name(f"{directory.name}.damaged-{time.time():.0f}")
            directory.rename(aside)
            self.set_aside: tuple[Path, str] | None = (aside, str(exc))
            self._db = open_diskcache(directory, make_room)
        else:
            self.set_aside = None
        self._directory, self._make_room = directory, make_room
        self._file = str(directory / "cache.db")
        self._lock = directory.with_name(f"{directory.name}.lock")
        self._identity = recovery.identity(self._file)
        self._next_check = time.monotonic() + recovery.CHECK_EVERY
        self._generation = 0  # moves with every replacement of self._db
        self._hot_generation = 0
        self._in_transaction = threading.local()
        self._hot: LRUCache[str, FileEntry] = LRUCache(maxsize=hot_entries)
        # Replaced by every purge, in any worker: the hot entries of the others are then
        # dropped (a purged file whose blob another channel keeps would still look cached).
        self._purge_marker = str(directory / "purged")
        self._purge_seen = self._purge_token()
        self._convert_tuple_keys()

    # An index gone bad under the running proxy (index_recovery.py): every use of the
    # database goes through _call, which replaces it and tries once more.
    def _call(self, op: Callable[[Any], Any]) -> Any:
        inside = getattr(self._in_transaction, "depth", 0)
        if not inside and time.monotonic() >= self._next_check:
            self._notice_replaced()
        db = self._db
        try:
            return op(db)
        except (diskcache.Timeout, sqlite3.DatabaseError, OSError) as raised:
            exc = as_disk_error(raised)
            if not self._broken(exc):
                if isinstance(exc, sqlite3.Error):  # never a 500: a failure of the local disk
                    raise recovery.IndexDamaged(str(exc)) from None
                raise exc from None
            if inside:
                raise recovery.IndexDamaged(str(exc)) from None  # transact() replaces it
            self._recover(db, exc)
        try:
            return op(self._db)
        except (diskcache.Timeout, sqlite3.DatabaseError, OSError) as raised:
            exc = as_disk_error(raised)
            if isinstance(exc, sqlite3.Error):
                raise recovery.IndexDamaged(str(exc)) from None
            raise exc from None

    def _broken(self, exc: BaseException) -> bool:
        return recovery.broken(exc, self._file, self._identity)

    def _get(self, key: str, default: Any = None) -> Any:
        return self._call(lambda db: db.get(key, default))

    def _notice_replaced(self) -> None:
        """Another worker replaced the index, or the file at its path is another one (deleted,
        copied over): move to what is there now, or to a fresh one."""
        self._next_check = time.monotonic() + recovery.CHECK_EVERY
        if recovery.identity(self._file) != self._identity:
            self._recover(self._db, None)

    def check(self) -> str | None:
        """Why the index cannot be used right now (after trying to replace it), or None."""
        self._next_check = 0.0
        try:
            self._call(lambda db: db.get(_key("value", "purges")))
        except OSError as exc:
            return str(exc)
        return None

    def _recover(self, failed: Any, exc: BaseException | None) -> None:
        """Replace `failed` (the database that raised `exc`, or whose file is no longer at its
        path), under the index's lock: of several workers one sets it aside and starts a fresh
        one, the others (their file no longer at the path) open what it made. The file that
        failed is never opened again in place: connections of this process would share its
        broken state (a removed -shm), and another's lock on it could hold the open for a
        minute. Raises an OSError when it cannot be done yet (the next use tries again)."""
        try:
            with recovery.held(self._lock):
                if self._db is not failed:
                    return  # another thread did it while this one waited
                now = recovery.identity(self._file)
                if now != self._identity:
                    db = self._reopen()
                    if db is not None:
                        what = "another file at its path" if now else "file removed: started afresh"
                        self._swap(db, what)
                        return
                aside = recovery.set_aside(self._directory)
                db = open_diskcache(self._directory, self._make_room)
                self._swap(db, f"damaged ({exc or 'replaced by a file that is no index'})", aside)
        except sqlite3.Error as again:
            raise recovery.IndexDamaged(str(again)) from None

    def _reopen(self) -> Any:
        """The database at the index's path opened anew, if it opens and reads; else None."""
        db = None
        try:
            db = open_diskcache(self._directory, self._make_room)
            with disk_errors():
                db.get(_key("value", "purges"))
        except (sqlite3.DatabaseError, OSError) as exc:
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
            if isinstance(exc, OSError) and not self._broken(exc):
                raise  # full or locked: nothing to set aside
            return None
        return db

    def _swap(self, db: Any, what: str, aside: Path | None = None) -> None:
        old, self._db = self._db, db
        with contextlib.suppress(Exception):
            old.close()
        self._identity = recovery.identity(self._file)
        self._generation += 1
        self._purge_seen = None
        recovery.log_replaced(what, aside)

    def _convert_tuple_keys(self) -> None:
        """Indexes of earlier versions keyed entries by tuples: keep them, under str keys."""
        old = [k for k in self._call(lambda db: list(db.iterkeys())) if isinstance(k, tuple)]
        if not old:
            return
        with self._db.transact():
            for key in old:
                value = self._db.get(key)
                if value is not None:
                    self._db.set(_key(key[0], "\x1f".join(map(str, key[1:]))), value)
                self._db.delete(key)

    def _iter(self, table: str) -> list[str]:
        prefix = table + ":"
        return [
            k[len(prefix) :]
            for k in self._call(lambda db: list(db.iterkeys()))
            if isinstance(k, str) and k.startswith(prefix)
        ]

    def close(self) -> None:
        self._db.close()

    # immutable files
    def get_file(self, key: str) -> FileEntry | None:
        token = self._purge_token()  # a stat: cheaper than the SQLite read the LRU saves
        if token != self._purge_seen or self._hot_generation != self._generation:
            self._purge_seen = token
            self._hot_generation = self._generation  # the index was replaced: forget it all
            self._hot.clear()
        entry = self._hot.get(key)
        if entry is None:
            entry = self._call(lambda db: db.get(_key("file", key)))
            if entry is not None:
                self._hot[key] = entry
        return entry

    def put_file(self, key: str, entry: FileEntry) -> None:
        self.write_file(key, entry)
        self.remember_file(key, entry)

    def write_file(self, key: str, entry: FileEntry) -> None:
        """put_file's shared half, the SQLite write: safe in a thread (diskcache is)."""
        self._call(lambda db: db.set(_key("file", key), entry))

    def remember_file(self, key: str, entry: FileEntry) -> None:
        """put_file's in-process half (the hot LRU is not thread-safe: the event loop's)."""
        self._hot[key] = entry

    def forget_file(self, key: str) -> None:
        self._hot.pop(key, None)
        self._call(lambda db: db.delete(_key("file", key)))

    def forget_gone_file(self, key: str) -> None:
        """Forget an entry whose blob is gone (removed behind the proxy's back, or damaged and
        dropped). When the index cannot take the change (its disk is full), the entry stays:
        it names no blob, so every lookup finds the file missing again, and fetches it."""
        with contextlib.suppress(IndexFull):
            self.forget_file(key)

    def iter_files(self) -> list[tuple[str, FileEntry]]:
        return [
            (key, entry)
            for key in self._iter("file")
            if (entry := self._get(_key("file", key))) is not None
        ]

    def iter_meta(self) -> list[tuple[MetaKey, MetaEntry]]:
        return [
            (meta_key, entry)
            for key in self._iter("meta")
            if (meta_key := MetaKey.parse(key)) is not None
            if (entry := self._get(_key("meta", key))) is not None
        ]

    # purges, counted so a commit decided before one is not written after it (commits.py)
    def purges(self) -> int:
        count: int = self._call(lambda db: db.get(_key("value", "purges"), 0))
        return count

    def count_purge(self) -> None:
        """Before a purge deletes anything: commits still waiting from before it are then
        dropped, in every worker (they read the count inside their own transaction)."""
        self._call(lambda db: db.incr(_key("value", "purges"), default=0))
        self._replace_purge_marker()

    def _purge_token(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._purge_marker)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _replace_purge_marker(self) -> None:
        """A new file (a new inode) in the marker's place; on a disk that cannot take even an
        empty file, its time at least changes."""
        temp = f"{self._purge_marker}.{os.getpid()}"
        try:
            os.close(create_new(temp))
            os.replace(temp, self._purge_marker)
        except OSError:
            with contextlib.suppress(OSError):
                os.utime(self._purge_marker)
        # The hot entries (this worker's too) are dropped by the next get_file, on the event
        # loop: the LRU is not thread-safe, and purges run in a thread.

    # small shared records (prefetch jobs)
    def get_value(self, key: tuple[str, ...], default: Any) -> Any:
        return self._call(lambda db: db.get(_key("value", "\x1f".join(key)), default))

    def set_value(self, key: tuple[str, ...], value: Any) -> None:
        self._call(lambda db: db.set(_key("value", "\x1f".join(key)), value))

    @contextlib.contextmanager
    def transact(self) -> Iterator[None]:
        """One SQLite transaction. When the index breaks inside it, it is replaced and the
        transaction fails (an OSError): its writes are not tried again on the new one."""
        state = self._in_transaction
        depth = getattr(state, "depth", 0)
        if not depth and time.monotonic() >= self._next_check:
            self._notice_replaced()
        db = self._db
        state.depth = depth + 1
        try:
            with disk_errors(), db.transact():
                yield
        except (sqlite3.DatabaseError, OSError) as exc:
            if depth or not self._broken(exc):
                raise
            failed = exc
        else:
            return
        finally:
            state.depth = depth
        self._recover(db, failed)
        raise recovery.IndexDamaged(str(failed)) from None

    # revalidated metadata
    def get_meta(self, key: MetaKey) -> MetaEntry | None:
        entry: Any = self._call(lambda db: db.get(_key("meta", str(key))))
        return entry

    def put_meta(self, key: MetaKey, entry: MetaEntry) -> None:
        self._call(lambda db: db.set(_key("meta", str(key)), entry))

    def forget_meta(self, key: MetaKey) -> None:
        self._call(lambda db: db.delete(_key("meta", str(key))))

    # upstream 404s, remembered briefly so a storm of misses does not hammer the upstream
    def remember_missing(self, key: str | MetaKey, until: float, ttl: float) -> None:
        """Remember a 404 until `until` (our clock); diskcache's expiry only collects garbage.
        Keys are a file's key or a metadata key. A hint only: when the index cannot take it,
        the next request simply asks the upstream again."""
        if ttl > 0:
            with contextlib.suppress(IndexFull):
                self._call(lambda db: db.set(_key("missing", str(key)), until, expire=ttl + 60))

    def is_missing(self, key: str | MetaKey, now: float) -> bool:
        until = self._call(lambda db: db.get(_key("missing", str(key))))
        return until is not None and now < until

    def iter_missing(self) -> list[str]:
        return self._iter("missing")

    def forget_missing(self, key: str | MetaKey) -> None:
        self._call(lambda db: db.delete(_key("missing", str(key))))
