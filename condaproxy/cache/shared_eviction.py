"""Bounding the bucket's cache (`storage.max_size`): one replica at a time deletes the oldest
`cas/` blobs until they fit in 90 % of the bound.

- Only `cas/` is ever listed or deleted: uploads (`uploads/`) and control documents are never
  evicted.
- With Redis, the replica that wins the `evictor` lease does it; the lease is not renewed or
  released, so it also spaces the runs `storage.evict_interval` apart across the cluster.
  Without Redis every replica checks on its own interval; deletes are idempotent, so the
  worst case is a few redundant deletes.
- Oldest means first written (the bucket's LastModified), not least recently used: a blob
  still wanted is simply fetched again, verified, and written back. Nothing depends on a blob
  staying: a replica whose L1 holds it keeps serving it, and a miss goes upstream.
"""

from __future__ import annotations

import structlog

from ..storage.objectstore import ObjectStore, StoreUnavailable
from .coordination import Coordinator

log = structlog.get_logger("condaproxy.cache.shared_eviction")

KEEP = 0.9  # evict down to this fraction of max_size


class SharedEvictor:
    def __init__(
        self,
        store: ObjectStore,
        max_size: int,
        interval: float,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.store = store
        self.max_size = max_size
        self.interval = interval
        self.coordinator = coordinator

    async def run_once(self) -> int:
        """Evict if over the bound; returns the bytes deleted (0 if another replica's turn)."""
        if self.max_size <= 0:
            return 0
        if self.coordinator is not None:
            turn = await self.coordinator.lease("evictor", self.interval, renew=False)
            if turn is None:
                return 0
        try:
            objects = await self.store.list("cas/")
            total = sum(size for _, size, _ in objects)
            if total <= self.max_size:
                return 0
            freed, target = 0, total - int(self.max_size * KEEP)
            for name, size, _ in sorted(objects, key=lambda o: o[2]):
                if freed >= target:
                    break
                await self.store.delete(name)
                freed += size
        except StoreUnavailable as exc:
            log.warning("shared eviction skipped: storage unavailable", error=exc.message)
            return 0
        log.info("evicted from shared storage", bytes=freed, held=total - freed)
        return freed
