"""Receiving a download's body: each chunk hashed and stored, to its temp file while the disk
takes it, then to the in-memory relay once the disk is full; a small listed file gathered in
memory and hashed once. The event loop never waits on disk or on hashing a big chunk."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

import structlog

from ..rules.errors import IntegrityError
from .eviction import Evictor
from .inflight import InflightNotes
from .relay import Relay
from .transfer import Download, hash_and_write, hash_chunk
from .workers import Workers

log = structlog.get_logger("condaproxy.cache.downloads")

# A file of unknown size gathered in memory (a shard: a few KiB) is refused past this.
MAX_SMALL_SURPRISE = 16 << 20
# A small file up to this size is hashed on the event loop (sha256 runs at ~1.5 GB/s: ~40 us),
# cheaper than the hop to a thread and back; a bigger one in a thread.
INLINE_HASH = 64 << 10


class Receiver:
    """Where a download's bytes go as they arrive (one per Downloads)."""

    def __init__(
        self,
        workers: Workers,
        evictor: Evictor | None,
        notes: InflightNotes,
        shared_locks: bool,
        redact: Callable[[str], str],
    ) -> None:
        self.workers = workers
        self.evictor = evictor
        self.notes = notes
        self.shared_locks = shared_locks  # other workers may tail the download
        self.redact = redact

    async def receive(
        self,
        d: Download,
        chunks: AsyncIterator[bytes],
        sha: hashlib._Hash,
        md5: hashlib._Hash | None,
    ) -> None:
        """Hash and store every chunk: to the temp file while the disk takes them, then to the
        relay. Two-stage pipeline on disk: the previous chunk is written and hashed in a thread
        while this one arrives; the event loop never waits on disk or hashing."""
        if d.buffer is not None:
            await self._receive_small(d, chunks, sha, md5)
            return
        pending: asyncio.Future[bool] | None = None
        pending_chunk = b""
        try:
            async for chunk in chunks:
                if pending is not None:
                    await self._settle(d, await pending, pending_chunk)
                    pending = None
                if d.relay is None and d.temp is not None:
                    pending = asyncio.ensure_future(
                        self.workers.io(hash_and_write, d.temp, chunk, sha, md5)
                    )
                    pending_chunk = chunk
                else:
                    await self.workers.io(hash_chunk, chunk, sha, md5)
                    await self.to_relay(d, chunk)
            if pending is not None:
                await self._settle(d, await pending, pending_chunk)
                pending = None
        finally:
            if pending is not None:
                # The body broke off while a write was running: let it finish before the temp
                # file is closed (never close a descriptor under a pending write).
                await asyncio.gather(pending, return_exceptions=True)

    async def _receive_small(
        self,
        d: Download,
        chunks: AsyncIterator[bytes],
        sha: hashlib._Hash,
        md5: hashlib._Hash | None,
    ) -> None:
        """A small file, gathered in memory as it arrives and hashed once, in one hop."""
        assert d.buffer is not None
        async for chunk in chunks:
            d.buffer += chunk
            d.written += len(chunk)
            if d.written > MAX_SMALL_SURPRISE:
                raise IntegrityError(d.key, f"body passed {MAX_SMALL_SURPRISE} bytes")
            d.notify()
        if d.written <= INLINE_HASH:
            hash_chunk(d.buffer, sha, md5)  # tens of microseconds: less than a thread hop
        else:  # nothing writes to the buffer any more: hashed in place, not copied
            await self.workers.io(hash_chunk, d.buffer, sha, md5)

    async def _settle(self, d: Download, stored: bool, chunk: bytes) -> None:
        if stored:
            d.written += len(chunk)
            d.disk_end = d.written
            d.notify()
            return
        # The disk is full: keep serving this download from memory, keep nothing.
        assert d.temp is not None and self.evictor is not None
        log.warning("not cached: disk full", key=self.redact(d.key), at_byte=d.disk_end)
        self.evictor.not_kept("disk_full")
        d.temp.path.unlink(missing_ok=True)  # free the space; readers keep their descriptors
        d.relay = Relay(d.disk_end)
        if self.shared_locks:
            self.notes.announce(d.key, None, await asyncio.shield(d.head))
            d.announced = True
        await self.to_relay(d, chunk)

    async def to_relay(self, d: Download, chunk: bytes) -> None:
        assert d.relay is not None
        d.written += len(chunk)
        d.notify()
        await d.relay.put(chunk, d.slowest, d.cut_off)
