"""Immutable files (packages, shards): streamed from upstream while cached, verified, shared.

A miss starts one background download per file. The channel's record (or a shard's own name)
says what the file must be before any byte is streamed. The download writes a temp file, hashes
as it goes and, once size and sha256 match, commits the blob and then its index entry. Every
client of that file (the first, later ones in this process, others in other workers) tails the
download as bytes arrive. The last byte is held back until the file is verified, so a client
never receives a complete body with bad bytes: on a mismatch or a truncated upstream body its
connection is aborted instead. The download outlives a client that hangs up.

What is kept: only files verified against what the channel publishes. A file no record lists
(removed builds, lockfile URLs) is streamed, checked against the client's own
`X-Expected-Sha256` when it sends one, and never cached. When the disk is below `min_free` as a
miss starts, or fills up while it runs, the clients still get the whole verified file: bytes go
through a bounded window in memory (relay.py) and nothing is kept.

With [storage], the bytes may come from the shared bucket instead of the upstream (shared.py):
they are verified the same way, and a kept file is copied to the bucket once committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..rules.errors import IntegrityError, NotFound, UpstreamError
from ..rules.loops import UpstreamLoop
from ..settings import ChannelSettings
from ..storage.blobs import BlobStore, TempBlob
from ..storage.index import FileEntry, Index
from ..storage.locks import POLL_SECONDS, KeyedLocks, release
from .commits import WriteBehind
from .eviction import Evictor
from .inflight import InflightNotes
from .instruments import Metrics
from .receiving import Receiver
from .relay import Relay
from .tails import Body, LocalTail, PrivateStream, RemoteTail
from .transfer import (
    DISK_FULL,
    AlreadyCached,
    Download,
    Expected,
    Head,
    content_type,
    verify,
)
from .upstream import UpstreamClient, as_identity
from .workers import Workers

if TYPE_CHECKING:  # only with [storage]
    from .shared import SharedBlobs

log = structlog.get_logger("condaproxy.cache.downloads")

SMALL_BODY = 1 << 20  # a listed file this size or smaller is gathered in memory
BUFFER_BUDGET = 64 << 20  # at most this much of small files in memory at once


class Downloads:
    def __init__(
        self,
        index: Index,
        store: BlobStore,
        locks: KeyedLocks,
        upstream: UpstreamClient,
        inflight_dir: Path,
        negative_ttl: float,
        clock: Callable[[], float] = time.time,
        evictor: Evictor | None = None,
        metrics: Metrics | None = None,
        workers: Workers | None = None,
        shared: SharedBlobs | None = None,
    ) -> None:
        self.shared = shared  # the bucket behind L1 ([storage]), or None
        self.evictor = evictor
        self.metrics = metrics
        self.workers = workers or Workers()
        self._buffered = 0  # bytes of small downloads held in memory right now
        self.index = index
        self.store = store
        self.locks = locks
        self.upstream = upstream
        self.notes = InflightNotes(inflight_dir, store.tmp_dir)
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.receiver = Receiver(self.workers, evictor, self.notes, locks.shared, upstream.redact)
        self._active: dict[str, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Small files are committed in batches once the burst is over (commits.py).
        self.write_behind = WriteBehind(
            store, index, self.workers, self._receiving, locks.shared, BUFFER_BUDGET // 2
        )

    def _receiving(self) -> bool:
        """Whether a download of this process is still receiving its bytes."""
        return any(not d.verified and d.error is None for d in self._active.values())

    def cached(self, key: str) -> FileEntry | None:
        entry = self.index.get_file(key)
        if entry is not None and not self.store.exists(entry.sha256):
            self.index.forget_gone_file(key)  # blob removed behind our back: treat as a miss
            return None
        return entry

    async def start(
        self,
        key: str,
        channel: ChannelSettings,
        url: str,
        expected: Expected,
        claim: str | None = None,
    ) -> tuple[Head, Body, str]:
        """Join or start the download of `key`. Returns its head, this client's body (a reader
        to close when done) and the outcome (`miss` or `coalesced`). `claim` is this client's
        own X-Expected-Sha256: it decides this client's response only."""

        def private() -> PrivateStream:
            return PrivateStream(self.upstream, channel, url, expected, claim, key)

        while True:
            active = self._active.get(key)
            if active is not None and active.verified and active.temp is not None:
                # Only the commit (fsync, rename) is left: wait for it and serve a plain hit.
                await active.finished.wait()
                if active.entry is not None:
                    raise AlreadyCached(active.entry)
                continue
            if active is not None and active.joinable():
                try:
                    head = await asyncio.shield(active.head)
                except UpstreamLoop:
                    # Refused for the chain of hops of the request that started it (a client
                    # may forge one: rules/loops.py), not this one's: fetched with its own.
                    stream = private()
                    return await stream.open(), stream, "miss"
                except UpstreamError:
                    if active.abandoned:  # its only reader left before its head: anew
                        continue
                    raise
                return head, LocalTail(active, claim, private), "coalesced"
            if active is not None:  # not kept, and its window has moved on
                stream = private()
                return await stream.open(), stream, "miss"
            lock_fd = self.locks.try_acquire("dl:" + key)
            if lock_fd is None:
                remote = await self._remote_head(key)
                if remote is None:
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                head, temp_path, kept = remote
                if temp_path is None and kept:
                    # A small file in the other worker's memory: it is cached in a moment.
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                if temp_path is None:  # the other worker keeps nothing: stream on our own
                    stream = private()
                    return await stream.open(), stream, "miss"
                follow = RemoteTail(self, key, temp_path, claim, private, head.size)
                return head, follow, "coalesced"
            entry = self.cached(key)
            if entry is not None:  # finished by another worker while we looked
                release(lock_fd)
                raise AlreadyCached(entry)
            if self.index.is_missing(key, self.clock()):
                release(lock_fd)
                raise NotFound(f"not found upstream (remembered for {self.negative_ttl:g}s)")
            download = self._new_download(key, expected)
            self._active[key] = download
            task = asyncio.create_task(self._run(download, lock_fd, channel, url, expected))
            download.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tail = LocalTail(download, claim, private)  # joins before the first byte
            try:
                head = await asyncio.shield(download.head)
            except BaseException:
                await tail.aclose()
                raise
            return head, tail, "miss"

    def _new_download(self, key: str, expected: Expected) -> Download:
        """Where the bytes will be: a small listed file in memory (no temp file, no thread
        hop per chunk; made durable after the client has its last byte), a bigger one in a
        temp file, and one the cache cannot keep in the relay."""
        head = asyncio.get_running_loop().create_future()
        size = expected.size if expected.size is not None else 0
        if (
            expected.listed
            and size <= SMALL_BODY
            and self._buffered + size <= BUFFER_BUDGET
            and (self.evictor is None or self.evictor.has_room(size))
        ):
            self._buffered += size
            return Download(key, None, head, buffer=bytearray(), counted=size)
        temp = self._temp_for(key, expected)
        download = Download(key, temp, head)
        if temp is None:
            download.relay = Relay(0)
        return download

    def _temp_for(self, key: str, expected: Expected) -> TempBlob | None:
        """A temp file to keep the download in, or None: the file is not listed, or the disk
        is below min_free (checked as each miss starts: statvfs is cheap) or full."""
        if not expected.listed:
            return None
        if self.evictor is None or self.evictor.has_room(expected.size or 0):
            try:
                return self.store.new_temp()
            except OSError as exc:
                reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        else:
            reason = "below min_free"
        log.warning("not cached: low disk", key=self.upstream.redact(key), reason=reason)
        if self.evictor is not None:
            self.evictor.not_kept("low_disk")
        return None

    async def aclose(self, timeout: float | None = None) -> None:
        """Let in-flight downloads finish (graceful shutdown drains them), for up to `timeout`
        seconds; the rest are cancelled, which discards their temp files (nothing half-written
        is kept)."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            if late:
                log.warning("downloads cancelled at shutdown", count=len(late), after_s=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.write_behind.aclose()

    # the one download of a file

    async def _run(
        self, d: Download, lock_fd: int, channel: ChannelSettings, url: str, expected: Expected
    ) -> None:
        if self.metrics is not None:
            self.metrics.active_downloads.inc()
        from_shared = lease = None
        try:
            if self.shared is not None and expected.sha256 and expected.listed:
                from_shared, lease = await self.shared.claim(expected.sha256, d.key)
            source = from_shared or self.upstream.open(
                channel, url, headers={"accept-encoding": "identity"}
            )
            async with source as opened:
                response = as_identity(opened, expected.size)
                size = response.content_length
                if expected.size is not None and size is not None and size != expected.size:
                    raise IntegrityError(
                        response.url,
                        f"size {size} differs from the {expected.size} the channel lists",
                    )
                size = expected.size if expected.size is not None else size
                head = Head(size, content_type(d.key), expected.sha256)
                d.head.set_result(head)  # the note below is for other workers only
                if self.locks.shared and d.buffer is None:
                    # Other workers may join: tell them which temp file to tail, or that
                    # nothing is kept (they stream on their own). A small file in memory needs
                    # no note: they cannot read it and wait for it to be cached either way
                    # (start(): no note, and a note saying "in memory, kept", both poll).
                    await self.workers.io(self.notes.announce, d.key, d.temp, head, d.kept)
                    d.announced = True
                sha = hashlib.sha256()
                md5 = hashlib.md5() if expected.md5 and not expected.sha256 else None
                await self.receiver.receive(d, response.iter_bytes(), sha, md5)
                verify(response.url, d.written, sha, md5, expected, size)
            # Verified bytes may reach clients now; durability (fsync, rename) only matters
            # for the cache, so it stays off the client's critical path.
            d.sha256 = sha.hexdigest()
            d.verified = True
            d.notify()
            if d.kept:
                entry = FileEntry(d.sha256, d.written, self.clock(), head.content_type)
                await self._commit(d, entry)
            if d.entry is not None and self.shared is not None and from_shared is None:
                self.shared.replicate(d.entry.sha256, lease)  # verified and in L1: now shared
                lease = None  # released once the bucket has it
        except BaseException as exc:
            d.error = exc
            bucket_copy = from_shared is not None and from_shared.from_bucket
            if bucket_copy and isinstance(exc, IntegrityError) and expected.sha256:
                await self.shared.corrupt(expected.sha256, str(exc))  # type: ignore[union-attr]
            # The clients waiting on the head hear of it first: no bookkeeping below, which
            # may fail too (a full index), may leave them waiting forever.
            if not d.head.done():
                d.head.set_exception(
                    exc if isinstance(exc, Exception) else UpstreamError(url, "cancelled")
                )
            elif d.abandoned:
                log.info(
                    "download stopped: no client left, nothing kept",
                    key=self.upstream.redact(d.key),
                    at_byte=d.written,
                )
            else:
                log.warning("download failed", key=self.upstream.redact(d.key), error=str(exc))
            if isinstance(exc, NotFound):
                self.index.remember_missing(
                    d.key, self.clock() + self.negative_ttl, self.negative_ttl
                )
            if not isinstance(exc, Exception) and not d.abandoned:
                raise  # a stop asked by stop_if_unread ends here; any other goes on
        finally:
            if self.metrics is not None:
                self.metrics.active_downloads.dec()
            if d.buffer is not None:
                self._buffered -= d.counted
            self._active.pop(d.key, None)
            if d.announced:
                self.notes.forget(d.key)
            if lease is not None:
                await lease.release()
            if d.temp is not None and d.entry is None:
                d.temp.discard()  # readers hold their own descriptors
            elif d.temp is not None:
                d.temp.close()
            release(lock_fd)
            d.finished.set()
            d.notify()

    async def _commit(self, d: Download, entry: FileEntry) -> None:
        try:
            kept = await self.write_behind.keep(d, entry)
        except (OSError, sqlite3.Error) as exc:
            # The clients have their bytes (the temp file stays readable); the cache keeps
            # nothing it could not make durable.
            log.warning(
                "not cached: commit failed",
                key=self.upstream.redact(d.key),
                error=f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}",
            )
            full = getattr(exc, "errno", None) in DISK_FULL or "full" in str(exc)
            if self.evictor is not None:
                self.evictor.not_kept("disk_full" if full else "io_error")
            return
        if not kept:
            log.info("not cached: purged meanwhile", key=self.upstream.redact(d.key))
            return
        d.entry = entry
        if self.evictor is not None:
            self.evictor.added(entry.size)
        log.info("cached", key=self.upstream.redact(d.key), bytes=entry.size, sha256=entry.sha256)

    async def _remote_head(self, key: str) -> tuple[Head, str | None, bool] | None:
        """The head of a download another worker runs, once it has one."""
        entry = self.cached(key)
        if entry is not None:
            raise AlreadyCached(entry)
        return self.notes.head(key)

    def remote_mode(self, key: str) -> str:
        return self.notes.mode(key)
