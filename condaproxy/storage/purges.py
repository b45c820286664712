"""Purges that reach every replica: a bounded log in the bucket, `control/purges.json`.

A purge is appended by compare-and-swap (so none is lost when two replicas purge at once)
before any replica acts on it; every replica then applies the scopes it has not applied yet,
on a Redis notice or at its next poll. The log keeps the last `KEEP` entries: a replica that
fell further behind than that cannot tell what it missed, and purges everything instead.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog

from .objectstore import Doc, ObjectStore, StoreUnavailable

logger = structlog.get_logger("condaproxy.storage.purges")

KEY = "control/purges.json"
KEEP = 200
# The log is read whole on every change: KEEP entries of a scope (a few names each, well under
# 1 KB) are some 200 KB, so 16 MiB leaves a wide margin and bounds what a bucket writer can
# make each replica read (objectstore.get_doc; a larger log is refused like an unreadable one).
MAX_LOG = 16 << 20
EVERYTHING: dict[str, Any] = {}  # the scope that purges every channel


class Scope(msgspec.Struct, forbid_unknown_fields=True):
    """What one entry may purge: ops.admin.Scope's fields, nothing else."""

    channel: str | None = None
    subdir: str | None = None
    filename: str | None = None
    package: str | None = None
    metadata_only: bool = False


class Entry(msgspec.Struct):
    seq: int
    scope: Any  # checked entry by entry (scope_of): one bad entry never hides the others


def scope_of(entry: Entry) -> dict[str, Any]:
    """The entry's scope as the purger takes it. One this proxy cannot read (another writer
    of the bucket, a damaged log) purges everything: a purge is never skipped, and purging
    more than asked only costs fetching again."""
    try:
        scope = msgspec.convert(entry.scope, Scope)
    except msgspec.ValidationError as exc:
        logger.error("unreadable purge entry: purging everything", seq=entry.seq, error=str(exc))
        return EVERYTHING
    values = {f: getattr(scope, f) for f in scope.__struct_fields__}
    return {f: v for f, v in values.items() if v is not None and v is not False}


class Log(msgspec.Struct):
    seq: int = 0
    entries: list[Entry] = msgspec.field(default_factory=list)


def _decode(doc: Doc | None) -> Log:
    if doc is None:
        return Log()
    try:
        return msgspec.json.decode(doc.body, type=Log)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StoreUnavailable(f"{KEY} in shared storage is not a purge log: {exc}") from None


class PurgeLog:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.seen = -1  # the last entry applied here; -1 until the log was first read
        self._etag: str | None = None
        self._applied: set[int] = set()  # our own entries, applied before the log is re-read

    async def start(self) -> None:
        """A new replica starts with an empty cache: the purges before it are moot."""
        doc = await self.store.get_doc(KEY, limit=MAX_LOG)
        self.seen = _decode(doc).seq
        self._etag = doc.etag if doc is not None else None

    async def append(self, scope: dict[str, Any]) -> int:
        """Record a purge for every replica; returns its number (applied here by the caller)."""
        appended: list[int] = []

        def change(doc: Doc | None) -> bytes:
            log = _decode(doc)
            log.seq += 1
            log.entries = [*log.entries, Entry(log.seq, scope)][-KEEP:]
            appended[:] = [log.seq]
            return msgspec.json.encode(log)

        await self.store.update(KEY, change, limit=MAX_LOG)
        self._applied.add(appended[0])
        return appended[0]

    async def unseen(self) -> list[dict[str, Any]]:
        """The scopes other replicas purged since the last call (a 304 while none did)."""
        if self.seen < 0:
            await self.start()
            return []
        doc = await self.store.get_doc(KEY, if_none_match=self._etag, limit=MAX_LOG)
        if doc is None or (doc.etag == self._etag and not doc.body):
            return []
        log = _decode(doc)
        self._etag = doc.etag
        oldest = log.entries[0].seq if log.entries else log.seq + 1
        if oldest > self.seen + 1 and log.seq > self.seen:
            missed = [EVERYTHING]  # fell behind the log's window: purge it all
        else:
            missed = [
                scope_of(e) for e in log.entries if e.seq > self.seen and e.seq not in self._applied
            ]
        self.seen = max(self.seen, log.seq)
        self._applied = {s for s in self._applied if s > self.seen}
        return missed
