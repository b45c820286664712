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
import os
import socket
from typing import Any

import structlog

from ..settings import ClusterSettings, Settings
from ..storage.blobs import BlobStore
from ..storage.manifests import SharedManifests
from ..storage.objectstore import ObjectStore, StoreUnavailable
from ..storage.uploads import UploadStore
from .shared import SharedBlobs

log = structlog.get_logger("condaproxy.cache.cluster")


class Cluster:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        blobs: SharedBlobs,
        uploads: UploadStore,
    ) -> None:
        self.settings = settings
        self.cluster = settings.cluster or ClusterSettings()
        self.replica = self.cluster.replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.store = store
        self.blobs = blobs
        self.uploads = uploads
        self.manifests = SharedManifests(store, uploads, self.replica)
        uploads.shared = self.manifests
        # Channels that can have uploads: their manifests are what the poll re-reads.
        self.upload_channels = sorted(n for n, c in settings.channels.items() if not c.mirror_only)
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings, l1: BlobStore, uploads: UploadStore) -> Cluster:
        assert settings.storage is not None
        store = ObjectStore(settings.storage)
        return cls(settings, store, SharedBlobs(store, l1), uploads)

    async def start(self) -> None:
        await self.poll_once()
        self._poller = asyncio.create_task(self._poll_forever())

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.blobs.aclose()
        self.store.close()

    def status(self) -> dict[str, Any]:
        """For /readyz: which shared dependency is down, if any."""
        body: dict[str, Any] = {"storage": "ok" if self.store.available else "unavailable"}
        if not self.store.available:
            body["storage_error"] = self.store.last_error
        return body

    async def poll_once(self) -> None:
        """One round: every upload manifest (or, with none, a liveness read), then pending
        replication once the store answers."""
        try:
            if not self.upload_channels:
                await self.store.get_doc("control/alive")
            for channel in self.upload_channels:
                await self.manifests.refresh(channel)
        except StoreUnavailable as exc:
            log.warning("shared storage unavailable", error=exc.message)
            return
        self.blobs.flush_pending()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cluster.poll_interval)
            try:
                await self.poll_once()
            except Exception as exc:  # the loop must outlive any one failure
                log.error("cluster poll failed", error=f"{type(exc).__name__}: {exc}")
