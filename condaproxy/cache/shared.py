"""The shared bucket as L2 behind each replica's local blob store (L1).

- Only verified blobs enter the bucket: a blob is replicated from L1 after the download that
  verified it has committed it, named by its sha256 (`layout.blob_key`). Writes are blind
  overwrites: whoever writes a key writes the same bytes.
- A blob read back from the bucket is never trusted: it is streamed through the same download
  path as an upstream body (hashed as it arrives, the last byte held back until size and sha256
  match) before any client gets it whole or L1 keeps it. A corrupt object is deleted, so the
  next request fetches the file from upstream again.
- The store being down costs nothing but the shared copy: a read failure is a miss (the
  download goes upstream; for a small object also a failure in the middle of its body, as
  it is read whole before its download starts), and blobs that could not be replicated are
  kept in a pending set and pushed once the store answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from ..storage.blobs import BlobStore
from ..storage.layout import blob_key
from ..storage.objectstore import ObjectStore, Opened, StoreUnavailable
from .coordination import Coordinator, Lease
from .instruments import Metrics
from .peers import PeerBody, Peers

log = structlog.get_logger("condaproxy.cache.shared")

MAX_PENDING = 10_000  # blobs remembered for replication while the store is down
WAIT_POLL = 0.2  # seconds between looks at the bucket while another replica downloads
# An object this size or smaller (shards, most packages) is read whole before its download
# starts: the download gathers such a file in memory anyway (downloads.SMALL_BODY).
SMALL_OBJECT = 1 << 20


class Gathered:
    """A small object already read whole (`SharedBlobs.open`), read like an open one."""

    def __init__(self, body: bytes, size: int) -> None:
        self.body, self.size = body, size

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        if self.body:
            yield self.body

    def close(self) -> None:
        self.body = b""


@dataclass
class SharedBody:
    """A bucket object read like an upstream response (the download code's interface)."""

    opened: Opened | Gathered
    url: str
    from_bucket = True  # a bad copy is deleted (a peer's stream is not the bucket's)

    @property
    def content_length(self) -> int:
        return self.opened.size

    def iter_bytes(self) -> AsyncIterator[bytes]:
        return self.opened.iter_bytes()

    async def __aenter__(self) -> SharedBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.opened.close()


class SharedBlobs:
    def __init__(
        self,
        store: ObjectStore,
        blobs: BlobStore,
        parallel: int = 4,
        coordinator: Coordinator | None = None,
        lease: float = 6.0,
        owner_wait: float = 30.0,
        peers: Peers | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.coordinator = coordinator
        self.peers = peers
        self.lease_ttl = lease
        self.owner_wait = owner_wait
        self.pending: set[str] = set()
        self.metrics = metrics
        self._slots = asyncio.Semaphore(parallel)
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, sha256: str) -> SharedBody | None:
        """The bucket's copy of a blob, to be verified by the reader; None on a miss or when
        the store cannot be asked (the caller then goes upstream)."""
        if not self.store.available:
            self._count("unavailable")
            return None
        try:
            opened = await self.store.open(blob_key(sha256))
        except StoreUnavailable as exc:
            log.warning("shared storage unavailable: fetching from upstream", error=exc.message)
            self._count("unavailable")
            return None
        if opened is None:
            self._count("miss")
            return None
        name = f"{self.store.describe()}{blob_key(sha256)}"
        if opened.size > SMALL_OBJECT:
            self._count("hit")
            return SharedBody(opened, name)
        # Read whole here, so that a store failing mid-body is a miss (the file comes from
        # upstream) rather than a download already under way failing its clients. What is
        # read is verified by the download like any body: one longer than it said (at most
        # one byte more is read) or other bytes fail there, and the object is deleted.
        try:
            body = b"".join([chunk async for chunk in opened.iter_bytes(limit=opened.size)])
        except StoreUnavailable as exc:
            log.warning("shared storage unavailable: fetching from upstream", error=exc.message)
            self._count("unavailable")
            return None
        finally:
            opened.close()
        self._count("hit")
        return SharedBody(Gathered(body, opened.size), name)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.shared_reads.labels(result).inc()

    async def claim(
        self, sha256: str, key: str
    ) -> tuple[SharedBody | PeerBody | None, Lease | None]:
        """The bucket's copy of a blob, or else the go-ahead to fetch it from upstream: with
        Redis, the lease `dl:<sha256>`, so one replica of the cluster fetches while the others
        stream it from that owner as it arrives (with `peer_url`), or wait (up to `owner_wait`
        seconds, then fetch themselves) and read the bucket's copy once the owner stored it."""
        body = await self.open(sha256)
        if body is not None or self.coordinator is None:
            return body, None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.owner_wait
        own = self.peers.own_url if self.peers is not None else ""
        while True:
            lease = await self.coordinator.lease(f"dl:{sha256}", self.lease_ttl, own)
            if lease is not None:
                body = await self.open(sha256)  # the owner may have finished just now
                if body is not None:
                    await lease.release()
                    return body, None
                return None, lease
            owner = await self.coordinator.holder(f"dl:{sha256}")
            if self.peers is not None and owner and owner != own:
                # Stream it from the owner; if it cannot serve it, fetch it ourselves.
                streamed = await self.peers.open(owner, key, sha256)
                if streamed is not None:
                    self._count("peer")
                return streamed, None
            if not self.store.available:
                return None, None  # the owner's copy cannot reach us through the bucket
            if loop.time() > deadline:
                log.warning("gave up waiting for another replica's download", sha256=sha256)
                return None, None
            await asyncio.sleep(WAIT_POLL)
            body = await self.open(sha256)
            if body is not None:
                return body, None

    async def corrupt(self, sha256: str, reason: str) -> None:
        """A bucket object failed verification: delete it, so the next miss goes upstream."""
        log.error("corrupt object in shared storage deleted", sha256=sha256, reason=reason)
        self._count("corrupt")
        await self.forget(sha256)

    async def forget(self, sha256: str) -> None:
        """Delete the bucket's copy of a blob (a purge, or a corrupt object)."""
        self.pending.discard(sha256)
        with contextlib.suppress(StoreUnavailable, FileNotFoundError):
            await self.store.delete(blob_key(sha256))

    def replicate(self, sha256: str, lease: Lease | None = None) -> None:
        """Copy a verified, committed L1 blob to the bucket in the background; the download's
        lease (if any) is released once the copy is there for the waiting replicas."""
        task = asyncio.create_task(self._put_then_release(sha256, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put_then_release(self, sha256: str, lease: Lease | None) -> None:
        try:
            await self._put(sha256)
        finally:
            if lease is not None:
                await lease.release()

    async def _put(self, sha256: str) -> None:
        if not self.store.available:
            self._remember(sha256)
            return
        path = self.blobs.path_for(sha256)
        async with self._slots:
            if not path.is_file():
                return  # evicted from L1 meanwhile: nothing to copy
            try:
                await self.store.put_file(blob_key(sha256), path)
            except StoreUnavailable:
                self._remember(sha256)
                return
        self.pending.discard(sha256)
        log.info("replicated to shared storage", sha256=sha256)
        if self.metrics is not None:
            self.metrics.shared_writes.labels("stored").inc()
            self.metrics.shared_pending.set(len(self.pending))

    def _remember(self, sha256: str) -> None:
        if len(self.pending) < MAX_PENDING:
            self.pending.add(sha256)
        if self.metrics is not None:
            self.metrics.shared_writes.labels("deferred").inc()
            self.metrics.shared_pending.set(len(self.pending))

    def flush_pending(self) -> int:
        """Push the blobs the store missed while it was down (called by the poller)."""
        if not self.pending or not self.store.available:
            return 0
        batch = list(self.pending)[:64]
        for sha in batch:
            self.pending.discard(sha)
            self.replicate(sha)
        return len(batch)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.peers is not None:
            await self.peers.aclose()
