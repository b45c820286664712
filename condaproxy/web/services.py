"""The composition root: every long-lived object of the proxy, built once, with keyword
arguments, in dependency order. The app's lifespan calls `build_services`; tests call it
directly (with an injected clock, an httpx transport and a resolver) to drive the engine
without a server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import structlog

from ..cache.derived import Derived
from ..cache.dispatch import Proxy
from ..cache.downloads import Downloads
from ..cache.eviction import Evictor
from ..cache.instruments import Metrics
from ..cache.merging import Merger
from ..cache.metadata import MetadataCache
from ..cache.overlay import Overlay
from ..cache.packages import Packages
from ..cache.policing import Policing
from ..cache.publish import Publisher
from ..cache.upstream import Resolver, UpstreamClient, system_resolve
from ..cache.warmup import warm_up
from ..cache.workers import Workers
from ..ops.admin import CacheAdmin, Scope
from ..ops.prefetch import Prefetcher
from ..rules.loops import INSTANCE_SECRET_ENV
from ..rules.redact import Redactor
from ..settings import Settings
from ..storage.blobs import BlobStore, Liveness, sweep_temp_files
from ..storage.index import Index
from ..storage.keys import MetaKey
from ..storage.locks import KeyedLocks
from ..storage.uploads import UploadStore

if TYPE_CHECKING:  # imported only with [storage]: no cloud SDK in a single node's memory
    from ..cache.cluster import Cluster
    from ..cache.shared import SharedBlobs

log = structlog.get_logger("condaproxy.web.services")
# Seconds the downloads still running after the server's drain (server.shutdown_timeout) get to
# finish and be kept: no client waits for them any more.
DOWNLOADS_DRAIN = 5.0


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    index: Index
    locks: KeyedLocks
    store: BlobStore
    uploads: UploadStore
    upstream: UpstreamClient
    workers: Workers
    meta: MetadataCache
    evictor: Evictor
    downloads: Downloads
    packages: Packages
    overlay: Overlay
    proxy: Proxy
    publisher: Publisher
    admin: CacheAdmin
    prefetcher: Prefetcher
    liveness: Liveness
    cluster: Cluster | None = None  # [storage]: the shared bucket (and [cluster] coordination)
    warming: asyncio.Task[list[MetaKey]] | None = None  # the worker's warm-up (warmup.py)

    def start_warm_up(self) -> None:
        """What a first request would do with what is cached, done now, in the background:
        start-up and /healthz wait for none of it."""
        self.warming = asyncio.ensure_future(warm_up(self.packages))

    async def aclose(self, drain: float = DOWNLOADS_DRAIN) -> None:
        """Running downloads finish and are kept (those the server's drain left behind, which
        no client waits for any more, for at most `drain` more seconds); then everything is
        closed."""
        if self.warming is not None:
            self.warming.cancel()
            await asyncio.wait([self.warming])
        await self.prefetcher.aclose()
        await self.downloads.aclose(drain)
        if self.cluster is not None:
            await self.cluster.aclose()
        await self.packages.views.derived.aclose()
        await self.evictor.stop()
        await self.upstream.aclose()
        self.workers.close()
        self.uploads.close()
        self.index.close()
        self.liveness.close()


async def build_services(
    settings: Settings,
    *,
    metrics: Metrics,
    clock: Callable[[], float] = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver = system_resolve,
) -> Services:
    """Build the object graph over the cache directory, sweep what a crash left, drop the cache
    of any channel whose upstream changed, and start the evictor."""
    root, tmp = settings.cache.path, settings.cache.path / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    liveness = Liveness(root / "alive.lock")
    alone = liveness.alone()  # no other worker is running
    swept = sweep_temp_files(tmp) if alone else 0
    store = BlobStore(root / "blobs", tmp)

    def make_room() -> bool:
        """Opening an index writes to it: on a full disk, a cached blob goes first (it can be
        fetched again; a proxy that cannot start serves nothing)."""
        freed = store.drop_least_recent()
        if freed:
            log.warning(
                "disk full at start-up: evicted a cached file to open the index", bytes=freed
            )
        return freed > 0

    index = Index(root / "index", make_room=make_room, set_aside_damaged=alone)
    liveness.share()  # only now: no other process opens the index while it is set aside
    if index.set_aside is not None:
        aside, why = index.set_aside
        log.error(
            "index damaged: set aside, starting with an empty one", moved_to=str(aside), reason=why
        )
    locks = KeyedLocks(root / "locks", shared=settings.server.workers > 1)
    uploads = UploadStore(root / "uploads", tmp, locks, clock, make_room)
    orphans = uploads.sweep_orphans()
    redact = Redactor(settings.secrets())
    # One random secret for all workers of one `serve` (its parent made it); a process that no
    # `serve` started (tests) makes its own. Keys the opaque hops of rules/loops.py.
    secret = os.environ.get(INSTANCE_SECRET_ENV) or secrets.token_hex(16)
    upstream = UpstreamClient(
        settings.upstream, redact, transport, metrics, resolver, secret=secret
    )
    cluster = None
    if settings.storage is not None:
        from ..cache.cluster import Cluster

        cluster = Cluster.build(settings, store, uploads, metrics)
    services = _engine(
        settings,
        metrics=metrics,
        clock=clock,
        index=index,
        locks=locks,
        store=store,
        uploads=uploads,
        upstream=upstream,
        liveness=liveness,
        cluster=cluster,
    )
    if cluster is not None:
        admin = services.admin
        cluster.purger = lambda scope, forgotten: admin.purge(Scope(**scope), forgotten)
        cluster.after_purge = services.downloads.write_behind.flush
        await cluster.start()
    async with locks.hold("reconcile-upstreams"):
        changed = await asyncio.to_thread(services.admin.forget_changed_upstreams)
    for name, old in changed.items():
        log.warning(
            "channel upstream changed: cache of the old upstream dropped",
            channel=name,
            old_upstream=redact(old),
            upstream=redact(settings.channels[name].upstream or "(none)"),
        )
    await services.evictor.run_once()
    services.evictor.start()
    log.info(
        "started",
        config=settings.source,
        cache=str(root),
        swept_temp_files=swept,
        swept_orphan_uploads=orphans,
        channels=sorted(settings.channels),
    )
    return services


def _engine(
    settings: Settings,
    *,
    metrics: Metrics,
    clock: Callable[[], float],
    index: Index,
    locks: KeyedLocks,
    store: BlobStore,
    uploads: UploadStore,
    upstream: UpstreamClient,
    liveness: Liveness,
    cluster: Cluster | None = None,
) -> Services:
    """The pull-through engine and the operator features over the stores."""
    workers, meta, evictor, downloads, packages = _packages(
        settings,
        metrics=metrics,
        clock=clock,
        index=index,
        locks=locks,
        store=store,
        upstream=upstream,
        shared=cluster.blobs if cluster is not None else None,
    )
    merger = Merger(
        meta=meta, index=index, store=store, tmp_dir=settings.cache.path / "tmp", workers=workers
    )
    overlay = Overlay(uploads=uploads, merger=merger, packages=packages)
    policy = settings.policy_rules()
    policing = None
    if any(policy.active(name) for name in settings.channels):
        policing = Policing(
            policy,
            dict(settings.channels),
            overlay,
            metrics,
            settings.cache.path / "policy",
            clock,
            settings.policy.test_clock_file,
        )
    proxy = Proxy(
        channels=settings.channels,
        index=index,
        packages=packages,
        overlay=overlay,
        policing=policing,
    )
    prefetcher = Prefetcher(
        index,
        proxy.repodata_path,
        proxy.warm,
        lambda channel: f"http://condaproxy.invalid/{channel}",
        clock,
    )
    return Services(
        settings=settings,
        metrics=metrics,
        index=index,
        locks=locks,
        store=store,
        uploads=uploads,
        upstream=upstream,
        workers=workers,
        meta=meta,
        evictor=evictor,
        downloads=downloads,
        packages=packages,
        overlay=overlay,
        proxy=proxy,
        publisher=Publisher(settings.channels, uploads, store, settings.uploads),
        admin=CacheAdmin(settings.channels, index, store, meta),
        prefetcher=prefetcher,
        liveness=liveness,
        cluster=cluster,
    )


def _packages(
    settings: Settings,
    *,
    metrics: Metrics,
    clock: Callable[[], float],
    index: Index,
    locks: KeyedLocks,
    store: BlobStore,
    upstream: UpstreamClient,
    shared: SharedBlobs | None = None,
) -> tuple[Workers, MetadataCache, Evictor, Downloads, Packages]:
    """Revalidated metadata, the bounded store, verified downloads, and the package path."""
    cache, tmp = settings.cache, settings.cache.path / "tmp"
    workers = Workers()
    meta = MetadataCache(
        index=index,
        locks=locks,
        root=cache.path / "meta",
        tmp_dir=tmp,
        upstream=upstream,
        ttl=cache.repodata_ttl,
        negative_ttl=cache.negative_ttl,
        workers=workers,
        clock=clock,
        metrics=metrics,
        max_document=cache.max_repodata_size,
        passthrough=cache.refresh_passthrough,
    )
    metrics.store_max_bytes.set(cache.max_size)
    rules = settings.policy_rules()
    metrics.declare(
        settings.channels,
        (n for n, c in settings.channels.items() if c.upstream),
        (n for n in settings.channels if rules.active(n)),
    )
    evictor = Evictor(
        index=index,
        store=store,
        locks=locks,
        metrics=metrics,
        max_size=cache.max_size,
        min_free=cache.min_free,
    )
    downloads = Downloads(
        index=index,
        store=store,
        locks=locks,
        upstream=upstream,
        inflight_dir=cache.path / "inflight",
        negative_ttl=cache.negative_ttl,
        clock=clock,
        evictor=evictor,
        metrics=metrics,
        workers=workers,
        shared=shared,
    )
    derived = Derived(meta=meta, index=index, locks=locks, workers=workers)
    packages = Packages(
        channels=settings.channels,
        index=index,
        store=store,
        meta=meta,
        downloads=downloads,
        upstream=upstream,
        evictor=evictor,
        derived=derived,
    )
    return workers, meta, evictor, downloads, packages
