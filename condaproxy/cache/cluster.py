"""A replica among several: the shared bucket ([storage]) and what keeps replicas in step.

Built only when [storage] is configured; without it the proxy never imports a cloud SDK's
state into its paths and nothing here runs. One background loop, every `cluster.poll_interval`
seconds, is the upper bound on how stale a replica can be: it re-reads the channels' upload
manifests (a conditional GET: a 304 when nothing changed), pushes blobs the store missed while
it was down, and so notices the store coming back or going away even when no request does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ..settings import ClusterSettings, Settings
from ..storage.blobs import BlobStore
from ..storage.manifests import SharedManifests
from ..storage.objectstore import ObjectStore, StoreUnavailable, probing
from ..storage.purges import PurgeLog
from ..storage.uploads import UploadStore
from .coordination import Coordinator
from .instruments import Metrics
from .peers import Peers
from .shared import SharedBlobs
from .shared_eviction import SharedEvictor

log = structlog.get_logger("condaproxy.cache.cluster")


class Cluster:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        blobs: SharedBlobs,
        uploads: UploadStore,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.settings = settings
        self.cluster = settings.cluster or ClusterSettings()
        self.replica = self.cluster.replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.store = store
        self.blobs = blobs
        self.uploads = uploads
        self.coordinator = coordinator
        self.manifests = SharedManifests(store, uploads, self.replica)
        uploads.shared = self.manifests
        self.manifests.changed = self._announce
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self.purges = PurgeLog(store)
        storage = settings.storage
        assert storage is not None
        self.evictor = SharedEvictor(store, storage.max_size, storage.evict_interval, coordinator)
        self._evicting: asyncio.Task[None] | None = None
        # Set by the composition root: purge this replica's cache by scope (a dict of
        # ops.admin.Scope's fields), adding the sha256 of every blob dropped to the list.
        self.purger: Callable[[dict[str, Any], list[str]], dict[str, int]] | None = None
        # After a purge here: this replica's commits from before it leave memory (commits.py).
        self.after_purge: Callable[[], Awaitable[None]] | None = None
        # Channels that can have uploads: their manifests are what the poll re-reads.
        self.upload_channels = sorted(n for n, c in settings.channels.items() if not c.mirror_only)
        self._poller: asyncio.Task[None] | None = None
        # What /readyz says of the store between requests: whether the last poll round
        # failed, and since when the current round has waited for an answer (a store that
        # hangs is down long before its call times out, retried, and fails).
        self.store_failing = False
        self._waiting_since: float | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        l1: BlobStore,
        uploads: UploadStore,
        metrics: Metrics | None = None,
    ) -> Cluster:
        assert settings.storage is not None
        cluster = settings.cluster or ClusterSettings()
        store = ObjectStore(settings.storage)
        coordinator = None
        if cluster.redis_url is not None and cluster.redis_url.value:
            namespace = f"{settings.storage.bucket}/{settings.storage.prefix}"
            coordinator = Coordinator(cluster.redis_url.value, namespace)
        peers = None
        if coordinator is not None and cluster.peer_url and cluster.peer_token is not None:
            peers = Peers(cluster.peer_url, cluster.peer_token.value, cluster.peer_timeout)
        blobs = SharedBlobs(
            store,
            l1,
            coordinator=coordinator,
            lease=cluster.lease,
            owner_wait=cluster.owner_wait,
            peers=peers,
            metrics=metrics,
        )
        if metrics is not None:
            metrics.declare_shared(coordinator is not None)
        return cls(settings, store, blobs, uploads, coordinator)

    async def start(self) -> None:
        await self.poll_once()
        self._poller = asyncio.create_task(self._poll_forever())
        if self.coordinator is not None:
            self._listener = asyncio.create_task(self.coordinator.listen(self._notice))
        if self.evictor.max_size > 0:
            self._evicting = asyncio.create_task(self._evict_forever())

    async def aclose(self) -> None:
        for task in (self._poller, self._listener, self._evicting, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.blobs.aclose()
        if self.coordinator is not None:
            await self.coordinator.aclose()
        self.store.close()

    def status(self) -> dict[str, Any]:
        """For /readyz: which shared dependency is down, if any (the proxy still serves)."""
        self.report()
        down = self._store_down()
        body: dict[str, Any] = {"storage": "unavailable" if down else "ok"}
        if down:
            body["storage_error"] = down
        if self.coordinator is None:
            body["coordination"] = "polling"
        elif self.coordinator.up:
            body["coordination"] = "ok"
        else:
            body["coordination"] = "degraded"
            body["coordination_error"] = f"redis unavailable: {self.coordinator.last_error}"
        return body

    def _store_down(self) -> str:
        """Why the store counts as down ("" if it does not): marked down by a failed call, or
        still failing at the last poll round (a store that stays down is retried every
        `retry_after` and must not read as "ok" meanwhile), or silent past `storage.timeout`."""
        if not self.store.available or self.store_failing:
            return self.store.last_error or f"{self.store.describe()}: unavailable"
        since, storage = self._waiting_since, self.settings.storage
        if since is not None and storage is not None:
            waited = time.monotonic() - since
            if waited > storage.timeout:
                return f"{self.store.describe()}: no answer for {waited:.0f} s"
        return ""

    # notices (Redis pub/sub): at most once, so the poll stays the bound

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _announce(self, channel: str) -> None:
        if self.coordinator is not None:
            self._spawn(self.coordinator.publish(f"uploads {channel}"))

    def _notice(self, message: str) -> None:
        kind, _, channel = message.partition(" ")
        if kind == "uploads" and channel in self.upload_channels:
            self._spawn(self._refresh(channel))
        elif kind == "purge":
            self._spawn(self._apply_purges())

    # purges: recorded in the bucket's log first, then applied on every replica

    async def purge(self, scope: dict[str, Any]) -> dict[str, int]:
        """Purge `scope` on every replica: logged in the bucket (a 503 while it is down, and
        nothing purged), applied here at once, elsewhere on the notice or the next poll."""
        assert self.purger is not None
        await self.purges.append(scope)
        removed = await self._purge_here(scope)
        if self.coordinator is not None:
            self._spawn(self.coordinator.publish("purge"))
        return removed

    async def _purge_here(self, scope: dict[str, Any]) -> dict[str, int]:
        assert self.purger is not None
        forgotten: list[str] = []
        removed = await asyncio.to_thread(self.purger, scope, forgotten)
        if self.after_purge is not None:
            await self.after_purge()
        for sha in forgotten:  # the bucket's copies too: the next miss goes upstream
            self._spawn(self.blobs.forget(sha))
        return removed

    async def _apply_purges(self) -> None:
        if self.purger is None:
            return
        try:
            scopes = await self.purges.unseen()
        except StoreUnavailable as exc:
            log.warning("shared storage unavailable", error=exc.message)
            return
        for scope in scopes:
            removed = await self._purge_here(scope)
            log.info("purged on another replica's request", scope=scope, **removed)

    async def _refresh(self, channel: str) -> None:
        try:
            await self.manifests.refresh(channel)
        except StoreUnavailable as exc:
            log.warning("shared storage unavailable", error=exc.message)

    async def poll_once(self) -> None:
        """One round: every upload manifest (or, with none, a liveness read), then pending
        replication once the store answers."""
        reads: list[Callable[[], Awaitable[object]]] = [
            functools.partial(self.manifests.refresh, c) for c in self.upload_channels
        ] or [functools.partial(self.store.get_doc, "control/alive")]
        failed = False
        for read in reads:  # one channel's trouble never stops the others
            self._waiting_since = time.monotonic()
            try:
                with probing():  # the poll, not a client, finds out if the store is back
                    await read()
            except StoreUnavailable as exc:
                log.warning("shared storage unavailable", error=exc.message)
                # A manifest it cannot read (the store answered) is that channel's problem,
                # not the store down: /readyz and shared_up say the store is down only if so.
                failed = failed or not self.store.available
            except Exception as exc:  # e.g. a full local disk copying one channel's blobs
                log.error("upload poll failed", error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                self._waiting_since = None
        self.store_failing = failed
        await self._apply_purges()
        self.blobs.flush_pending()
        self.report()

    def report(self) -> None:
        """The shared tier's gauges, as this replica sees its dependencies now."""
        metrics = self.blobs.metrics
        if metrics is None:
            return
        metrics.shared_up.labels("storage").set(0 if self._store_down() else 1)
        if self.coordinator is not None:
            metrics.shared_up.labels("coordination").set(1 if self.coordinator.up else 0)
        metrics.shared_pending.set(len(self.blobs.pending))

    async def _evict_forever(self) -> None:
        while True:
            await asyncio.sleep(self.evictor.interval)
            try:
                await self.evictor.run_once()
            except Exception as exc:  # the loop must outlive any one failure
                log.error("shared eviction failed", error=f"{type(exc).__name__}: {exc}")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cluster.poll_interval)
            try:
                await self.poll_once()
            except Exception as exc:  # the loop must outlive any one failure
                log.error("cluster poll failed", error=f"{type(exc).__name__}: {exc}")
                self.report()
