"""What the status page shows about the cache, read from the stores: per channel, when its
upstream last confirmed its metadata and when that last changed (the metadata index), what
it holds (CacheAdmin.usage), its subdirs seen so far, and its recent uploads.

Reading all of this walks the whole index, so it is taken in a thread, at most once per
`MAX_AGE` seconds per worker, whatever the number of page views (`OverviewCache`). Read-only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..rules.routing import SUBDIR_RE, channel_prefix
from ..settings import ChannelSettings
from ..storage.index import Index
from ..storage.keys import MetaKind
from ..storage.uploads import UploadStore
from .admin import CacheAdmin

MAX_AGE = 30.0
RECENT_UPLOADS = 10
# Entries that record an upstream's answer (merged views are made here, not fetched).
_UPSTREAM_KINDS = {MetaKind.REPODATA, MetaKind.CURRENT, MetaKind.SHARD_INDEX, MetaKind.FILE}


@dataclass
class SubdirState:
    """One subdir (`label/<label>/linux-64` or `linux-64`) the proxy has metadata for."""

    fetched_at: float | None = None  # the upstream last confirmed it (200 or 304)
    changed_at: float | None = None  # its content last changed
    shards: bool = False  # the upstream has a CEP-16 shard index for it


@dataclass
class ChannelState:
    fetched_at: float | None = None
    changed_at: float | None = None
    subdirs: dict[str, SubdirState] = field(default_factory=dict)


@dataclass(frozen=True)
class Overview:
    taken_at: float
    channels: dict[str, ChannelState]
    usage: dict[str, dict[str, int]]
    uploads: dict[str, list[dict[str, Any]]]

    @property
    def stored_bytes(self) -> int:
        return sum(u["bytes"] for u in self.usage.values())


def _later(a: float | None, b: float) -> float:
    return b if a is None or b > a else a


def metadata_states(
    index: Index, channels: Mapping[str, ChannelSettings]
) -> dict[str, ChannelState]:
    """Per configured channel: the latest upstream confirmation and change over all its
    metadata, and per subdir the same (one pass over the index's metadata entries)."""
    states: dict[str, ChannelState] = {name: ChannelState() for name in channels}
    for key, entry in index.iter_meta():
        name = channel_prefix(key.path, channels)
        if name is None or key.kind not in _UPSTREAM_KINDS:
            continue
        state = states[name]
        state.fetched_at = _later(state.fetched_at, entry.fetched_at)
        state.changed_at = _later(state.changed_at, entry.changed_at)
        if key.kind is MetaKind.FILE:
            continue
        below = key.path[len(name) + 1 :]
        if not SUBDIR_RE.match(below.rsplit("/", 1)[-1]):
            continue
        sub = state.subdirs.setdefault(below, SubdirState())
        sub.fetched_at = _later(sub.fetched_at, entry.fetched_at)
        sub.changed_at = _later(sub.changed_at, entry.changed_at)
        sub.shards = sub.shards or key.kind is MetaKind.SHARD_INDEX
    return states


def recent_uploads(uploads: UploadStore, channel: str, limit: int = RECENT_UPLOADS) -> list[Any]:
    """The channel's latest uploads, newest first: name, version, subdir, when, which token."""
    listed = sorted(uploads.list(channel), key=lambda u: u.uploaded_at, reverse=True)
    return [u.listing() for u in listed[:limit]]


def take_overview(
    admin: CacheAdmin,
    index: Index,
    uploads: UploadStore,
    channels: Mapping[str, ChannelSettings],
    now: float,
) -> Overview:
    return Overview(
        taken_at=now,
        channels=metadata_states(index, channels),
        usage=admin.usage(),
        uploads={name: recent_uploads(uploads, name) for name in channels},
    )


class OverviewCache:
    """The latest overview, taken again (once, however many ask) when older than MAX_AGE. When
    `version` (the uploads' markers: a stat each) says an upload was added or deleted since,
    by any worker, only its uploads are read again (`take_uploads`, cheap), at once: someone
    who just uploaded looks for it on the page, while the index figures (a scan of every
    entry) stay on the MAX_AGE clock however often uploads change."""

    def __init__(
        self,
        take: Callable[[float], Overview],
        clock: Callable[[], float] = time.time,
        version: Callable[[], object] = lambda: None,
        take_uploads: Callable[[], dict[str, list[dict[str, Any]]]] | None = None,
    ):
        self.take, self.clock, self.version = take, clock, version
        self.take_uploads = take_uploads
        self._latest: tuple[Overview, object] | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> tuple[Overview, object] | None:
        if self._latest is None:
            return None
        return self._latest if 0 <= self.clock() - self._latest[0].taken_at < MAX_AGE else None

    async def get(self) -> Overview:
        version = await asyncio.to_thread(self.version)
        fresh = self._fresh()
        if fresh is not None and fresh[1] == version:
            return fresh[0]
        async with self._lock:
            fresh = self._fresh()
            if fresh is not None and fresh[1] == version:
                return fresh[0]
            if fresh is not None and self.take_uploads is not None:
                uploads = await asyncio.to_thread(self.take_uploads)
                latest = replace(fresh[0], uploads=uploads)
            else:
                latest = await asyncio.to_thread(self.take, self.clock())
            self._latest = (latest, version)
            return latest
