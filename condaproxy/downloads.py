"""Immutable files (packages, shards): streamed from upstream while cached, verified, shared.

A miss starts one background download per file: it writes a temp file, hashes as it goes and,
once the size and sha256 match what the channel publishes, commits the blob and its index entry.
Every client of that file (the first, later ones in this process, others in other workers)
tails the temp file as bytes arrive. The last byte is held back until the file is verified, so
a client never receives a complete body with bad bytes: on a mismatch or a truncated upstream
body its connection is aborted instead. The download outlives a client that hangs up.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .errors import IntegrityError, NotFound, UpstreamError
from .eviction import Evictor
from .index import FileEntry, Index
from .locks import POLL_SECONDS, KeyedLocks, release
from .settings import ChannelSettings
from .store import BlobStore, TempBlob
from .upstream import UpstreamClient

log = structlog.get_logger("condaproxy.downloads")

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Expected:
    """What the channel publishes for a file; any field may be unknown."""

    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Head:
    """What is known before the body: enough to send response headers."""

    size: int | None
    content_type: str
    sha256: str | None


@dataclass
class Download:
    """A download in this process: a temp file being filled, and who is waiting on it."""

    key: str
    temp: TempBlob
    head: asyncio.Future[Head]
    written: int = 0
    verified: bool = False  # size and checksum matched: the last byte may go out
    entry: FileEntry | None = None
    error: BaseException | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # committed or failed
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def wait(self) -> None:
        await self._progress.wait()


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
    ) -> None:
        self.evictor = evictor
        self.index = index
        self.store = store
        self.locks = locks
        self.upstream = upstream
        self.inflight_dir = inflight_dir
        inflight_dir.mkdir(parents=True, exist_ok=True)
        self.negative_ttl = negative_ttl
        self.clock = clock
        self._active: dict[str, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def cached(self, key: str) -> FileEntry | None:
        entry = self.index.get_file(key)
        if entry is not None and not self.store.exists(entry.sha256):
            self.index.forget_file(key)  # blob removed behind our back: treat as a miss
            return None
        return entry

    async def start(
        self, key: str, channel: ChannelSettings, url: str, expected: Expected
    ) -> tuple[Head, Callable[[int, int | None], AsyncIterator[bytes]], str]:
        """Join or start the download of `key`. Returns its head, a body reader
        `(start, end) -> chunks` and the outcome (`miss` or `coalesced`)."""
        while True:
            active = self._active.get(key)
            if active is not None and active.verified:
                # Only the commit (fsync, rename) is left: wait for it and serve a plain hit.
                await active.finished.wait()
                if active.entry is not None:
                    raise AlreadyCached(active.entry)
                continue
            if active is not None:
                head = await asyncio.shield(active.head)
                return head, functools.partial(self._tail_local, active), "coalesced"
            lock_fd = self.locks.try_acquire("dl:" + key)
            if lock_fd is None:
                remote = await self._remote_head(key)
                if remote is None:
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                head, temp_path = remote
                return head, functools.partial(self._tail_remote, key, temp_path), "coalesced"
            entry = self.cached(key)
            if entry is not None:  # finished by another worker while we looked
                release(lock_fd)
                raise AlreadyCached(entry)
            if self.index.is_missing(key, self.clock()):
                release(lock_fd)
                raise NotFound(f"not found upstream (remembered for {self.negative_ttl:g}s)")
            download = Download(
                key, self.store.new_temp(), asyncio.get_running_loop().create_future()
            )
            self._active[key] = download
            task = asyncio.create_task(self._run(download, lock_fd, channel, url, expected))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            head = await asyncio.shield(download.head)
            return head, functools.partial(self._tail_local, download), "miss"

    async def aclose(self) -> None:
        """Let in-flight downloads finish (graceful shutdown drains them)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # the one download of a file

    def _inflight_path(self, key: str) -> Path:
        return self.inflight_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    async def _run(
        self, d: Download, lock_fd: int, channel: ChannelSettings, url: str, expected: Expected
    ) -> None:
        inflight = self._inflight_path(d.key)
        try:
            async with self.upstream.open(
                channel, url, headers={"accept-encoding": "identity"}
            ) as response:
                size = response.content_length
                if expected.size is not None and size is not None and size != expected.size:
                    raise IntegrityError(
                        response.url,
                        f"size {size} differs from the {expected.size} the channel lists",
                    )
                size = expected.size if expected.size is not None else size
                head = Head(size, content_type(d.key), expected.sha256)
                inflight.write_text(
                    json.dumps({"temp": str(d.temp.path), "size": size, "sha256": expected.sha256})
                )
                d.head.set_result(head)
                sha = hashlib.sha256()
                md5 = hashlib.md5() if expected.md5 and not expected.sha256 else None
                pending: asyncio.Future[None] | None = None
                len_pending = 0
                async for chunk in response.iter_bytes():
                    # Two-stage pipeline: the previous chunk is written and hashed in a thread
                    # while this one arrives; the event loop never waits on disk or hashing.
                    if pending is not None:
                        await pending
                        d.written += len_pending
                        d.notify()
                    pending = asyncio.ensure_future(
                        asyncio.to_thread(_write_and_hash, d.temp, chunk, sha, md5)
                    )
                    len_pending = len(chunk)
                if pending is not None:
                    await pending
                    d.written += len_pending
                _verify(response.url, d.written, sha, md5, expected, size)
            # Verified bytes may reach clients now; durability (fsync, rename) only matters
            # for the cache, so it stays off the client's critical path.
            d.verified = True
            d.notify()
            entry = FileEntry(sha.hexdigest(), d.written, self.clock(), head.content_type)
            if self.evictor is not None and not self.evictor.caching:
                # Low disk: the clients got their bytes, the cache keeps nothing.
                log.warning("not cached: low disk", key=self.upstream.redact(d.key))
                raise _NotKept()
            await asyncio.to_thread(self.store.commit, d.temp, entry.sha256, False)
            self.index.put_file(d.key, entry)  # only after the blob is durable
            d.entry = entry
            if self.evictor is not None:
                self.evictor.added(entry.size)
            log.info(
                "cached", key=self.upstream.redact(d.key), bytes=entry.size, sha256=entry.sha256
            )
        except _NotKept:
            d.temp.discard()
        except BaseException as exc:
            d.error = exc
            if isinstance(exc, NotFound):
                self.index.remember_missing(
                    d.key, self.clock() + self.negative_ttl, self.negative_ttl
                )
            if not d.head.done():
                d.head.set_exception(
                    exc if isinstance(exc, Exception) else UpstreamError(url, "cancelled")
                )
            else:
                log.warning("download failed", key=self.upstream.redact(d.key), error=str(exc))
            d.temp.discard()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._active.pop(d.key, None)
            inflight.unlink(missing_ok=True)
            d.temp.close()
            release(lock_fd)
            d.finished.set()
            d.notify()

    # readers

    async def _tail_local(self, d: Download, start: int, end: int | None) -> AsyncIterator[bytes]:
        fd = os.dup(d.temp.fd) if d.temp.fd >= 0 else None
        if fd is None:  # finished between head and first read
            fd = self._open_committed(d)
        try:
            offset = start
            while end is None or offset < end:
                verified = d.verified
                limit = d.written if verified else d.written - 1  # hold back the last byte
                if end is not None:
                    limit = min(limit, end)
                if offset < limit:
                    chunk = os.pread(fd, min(READ_CHUNK, limit - offset), offset)
                    if not chunk:
                        raise UpstreamError(d.key, "cache file shrank while being read")
                    offset += len(chunk)
                    yield chunk
                    continue
                if d.error is not None and not verified:
                    raise ClientAbort(f"download of {d.key} failed: {d.error}")
                if verified:
                    return
                await d.wait()
        finally:
            os.close(fd)

    def _open_committed(self, d: Download) -> int:
        if d.entry is None:
            raise ClientAbort(f"download of {d.key} failed: {d.error}")
        return self.store.open(d.entry.sha256)

    async def _remote_head(self, key: str) -> tuple[Head, str] | None:
        """The head of a download another worker runs, once it has one."""
        entry = self.cached(key)
        if entry is not None:
            raise AlreadyCached(entry)
        try:
            info = json.loads(self._inflight_path(key).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return Head(info["size"], content_type(key), info["sha256"]), info["temp"]

    async def _tail_remote(
        self, key: str, temp_path: str, start: int, end: int | None
    ) -> AsyncIterator[bytes]:
        try:
            fd = os.open(temp_path, os.O_RDONLY)
        except FileNotFoundError:
            entry = self.cached(key)
            if entry is None:
                raise ClientAbort(f"download of {key} in another worker failed") from None
            fd = self.store.open(entry.sha256)
        try:
            offset = start
            while True:
                entry = self.index.get_file(key)
                available = os.fstat(fd).st_size
                limit = available if entry is not None else available - 1
                if end is not None:
                    limit = min(limit, end)
                if offset < limit:
                    chunk = os.pread(fd, min(READ_CHUNK, limit - offset), offset)
                    offset += len(chunk)
                    yield chunk
                    continue
                if entry is not None and (offset >= (end or entry.size)):
                    return
                if entry is None and not self.locks.is_held("dl:" + key):
                    if self.index.get_file(key) is None:
                        raise ClientAbort(f"download of {key} in another worker failed")
                    continue
                await asyncio.sleep(POLL_SECONDS)
        finally:
            os.close(fd)


class AlreadyCached(Exception):
    def __init__(self, entry: FileEntry) -> None:
        super().__init__(entry.sha256)
        self.entry = entry


class _NotKept(Exception):
    """A verified download the cache does not keep (low disk)."""


class ClientAbort(Exception):
    """The body cannot be completed: the client's connection must be aborted."""


def _write_and_hash(
    temp: TempBlob, chunk: bytes, sha: hashlib._Hash, md5: hashlib._Hash | None
) -> None:
    temp.write(chunk)
    sha.update(chunk)
    if md5 is not None:
        md5.update(chunk)


def _verify(
    url: str,
    written: int,
    sha: hashlib._Hash,
    md5: hashlib._Hash | None,
    expected: Expected,
    size: int | None,
) -> None:
    if size is not None and written != size:
        raise IntegrityError(url, f"body ended after {written} of {size} bytes")
    if expected.sha256 and sha.hexdigest() != expected.sha256.lower():
        raise IntegrityError(url, f"sha256 {sha.hexdigest()} differs from {expected.sha256}")
    if md5 is not None and expected.md5 and md5.hexdigest() != expected.md5.lower():
        raise IntegrityError(url, f"md5 {md5.hexdigest()} differs from {expected.md5}")


def content_type(key: str) -> str:
    if key.endswith(".conda"):
        return "application/octet-stream"
    if key.endswith(".tar.bz2"):
        return "application/x-tar"
    return "application/octet-stream"
