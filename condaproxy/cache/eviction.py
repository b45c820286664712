"""Keeping the cache within `[cache] max_size`, and out of the way when the disk is nearly full.

Least recently used blobs go first. "Used" is the blob file's atime: a hit records the time in
memory and a background loop applies it in batches (os.utime), so the hit path pays no syscall
and every worker sees the same order. The mtime is left as the blob was written: a change in
place shows in it (blobs.py hashes such a blob again before serving it). When the store passes
max_size, blobs are evicted down to a low-water mark (90 %), by one worker at a time. Never
evicted: uploads (their own store), shards derived from uploads, and files this process is
serving right now (a file another worker streams survives the unlink until it is closed). Below
`min_free` free disk, new files are proxied but not cached, and readiness says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time

import structlog

from ..storage.blobs import BlobStore
from ..storage.index import Index
from ..storage.locks import KeyedLocks, release
from .instruments import Metrics

log = structlog.get_logger("condaproxy.cache.eviction")

LOW_WATER = 0.9
INTERVAL = 30.0  # seconds between background passes (a commit past max_size wakes it at once)


class Evictor:
    def __init__(
        self,
        index: Index,
        store: BlobStore,
        locks: KeyedLocks,
        metrics: Metrics,
        max_size: int,
        min_free: int,
    ) -> None:
        self.index = index
        self.store = store
        self.locks = locks
        self.metrics = metrics
        self.max_size = max_size
        self.min_free = min_free
        self.caching = True
        self._touched: dict[str, float] = {}
        self._serving: dict[str, int] = {}
        self._estimate: int | None = None
        self.changes = 0  # commits and purges seen by this worker: the store's size moved
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # the hit path

    def touch(self, sha256: str) -> None:
        self._touched[sha256] = time.time()

    def begin_serving(self, sha256: str) -> None:
        self._serving[sha256] = self._serving.get(sha256, 0) + 1

    def end_serving(self, sha256: str) -> None:
        self._serving[sha256] -= 1
        if not self._serving[sha256]:
            del self._serving[sha256]

    def has_room(self, size: int) -> bool:
        """Whether a new file of `size` bytes may be cached: the disk keeps `min_free` free
        after it. Checked as each miss starts (statvfs is cheap); updates `caching`."""
        try:
            st = os.statvfs(self.store.tmp_dir)
        except OSError:
            return False
        free = st.f_bavail * st.f_frsize
        self._set_caching(free >= self.min_free, free)
        return free - size >= self.min_free

    def not_kept(self, reason: str) -> None:
        """A verified download the cache could not keep (low disk, disk full, I/O error)."""
        self.metrics.not_cached.labels(reason).inc()

    def added(self, size: int) -> None:
        """A blob was committed: evict now if that took the store past max_size."""
        self.changes += 1
        if self._estimate is not None:
            self._estimate += size
            if self.max_size and self._estimate > self.max_size:
                self._wake.set()

    # the background loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._apply_touches)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # a failed pass is logged and retried on the next one
                log.warning("eviction pass failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INTERVAL)
            self._wake.clear()

    async def run_once(self) -> dict[str, int]:
        await asyncio.to_thread(self._apply_touches)
        self._check_disk()
        if not self.max_size:
            return {"evicted": 0, "bytes": 0}
        fd = self.locks.try_acquire("evictor")
        if fd is None:
            return {"evicted": 0, "bytes": 0}  # another worker is at it
        try:
            return await asyncio.to_thread(self._evict)
        finally:
            release(fd)

    def _apply_touches(self) -> None:
        touched, self._touched = self._touched, {}
        for sha, when in touched.items():
            path = self.store.location(sha)
            with contextlib.suppress(FileNotFoundError):
                os.utime(path, ns=(int(when * 1e9), os.stat(path).st_mtime_ns))

    def _check_disk(self) -> None:
        free = shutil.disk_usage(self.store.root).free
        self._set_caching(free >= self.min_free, free)

    def _set_caching(self, caching: bool, free: int) -> None:
        if caching != self.caching:
            log.warning(
                "caching resumed" if caching else "low disk: proxying without caching",
                free_bytes=free,
                min_free=self.min_free,
            )
        self.caching = caching

    def _evict(self) -> dict[str, int]:
        blobs = []
        total = 0
        for sha, size, used in self.store.usage():
            total += size
            blobs.append((used, sha, size))
        self.metrics.store_bytes.set(total)
        self._estimate = total
        if total <= self.max_size:
            return {"evicted": 0, "bytes": 0}
        # Only now read the index: which keys name each blob, which blobs are derived from uploads.
        target = int(self.max_size * LOW_WATER)
        keys_by_sha: dict[str, list[str]] = {}
        protected = set(self._serving)
        for key, entry in self.index.iter_files():
            keys_by_sha.setdefault(entry.sha256, []).append(key)
            if entry.local:
                protected.add(entry.sha256)
        blobs = [b for b in blobs if b[1] not in protected]
        evicted = freed = 0
        for _, sha, size in sorted(blobs):
            if total <= target:
                break
            for key in keys_by_sha.get(sha, []):
                self.index.forget_file(key)  # the index first: no hit is sent to a gone blob
            freed += self.store.delete(sha)
            total -= size
            evicted += 1
        self._estimate = total
        self.metrics.store_bytes.set(total)
        self.metrics.evictions.inc(evicted)
        self.metrics.evicted_bytes.inc(freed)
        log.info("evicted", blobs=evicted, bytes=freed, store_bytes=total, max_size=self.max_size)
        return {"evicted": evicted, "bytes": freed}
