"""Revalidated metadata: repodata, shard indexes, channeldata and other small JSON.

One upstream request per key at a time (single flight, across workers), conditional requests
with the upstream's validators once the copy is older than the ttl, stale-if-error when the
upstream fails, a negative cache for 404s. What a body becomes (variants, rewritten URLs) is
the caller's `build` function; this module only moves bytes and keeps the entry honest: the
variant blobs are durable before the entry that names them is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .conditional import is_fresh
from .errors import NotFound, UpstreamError, UpstreamNotFound
from .index import Index, MetaEntry, Variant
from .locks import KeyedLocks
from .rewrite import Origins
from .settings import ChannelSettings
from .store import BlobStore
from .upstream import UpstreamClient

log = structlog.get_logger("condaproxy.metadata")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Built:
    """What a build function makes of an upstream body."""

    digest: str
    variants: dict[str, bytes]
    origins: Origins = field(default_factory=Origins)


BuildFn = Callable[[bytes, str], Built]


@dataclass(frozen=True)
class Served:
    entry: MetaEntry
    outcome: str  # hit | miss | revalidated | stale | coalesced


def identity_build(body: bytes, url: str) -> Built:
    return Built(hashlib.sha256(body).hexdigest(), {"body": body})


class MetadataCache:
    def __init__(
        self,
        index: Index,
        locks: KeyedLocks,
        root: Path,
        tmp_dir: Path,
        upstream: UpstreamClient,
        ttl: float,
        negative_ttl: float,
        clock: Clock = time.time,
    ) -> None:
        self.index = index
        self.locks = locks
        self.root = root
        self.tmp_dir = tmp_dir
        self.upstream = upstream
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.clock = clock

    def store_for(self, key: str) -> BlobStore:
        """Each key keeps its own blobs, so replacing one key's snapshot deletes only its own."""
        return BlobStore(self.root / hashlib.sha256(key.encode()).hexdigest()[:32], self.tmp_dir)

    def variant_path(self, key: str, variant: Variant) -> Path:
        return self.store_for(key).path_for(variant.sha256)

    async def get(
        self, key: str, channel: ChannelSettings, urls: Sequence[str], build: BuildFn
    ) -> Served:
        """The current entry for `key`, fetched or revalidated as its age requires.

        `urls` are tried in order on a first fetch (e.g. repodata.json.zst, then .json);
        afterwards the URL that answered is the one revalidated.
        """
        entry = self.index.get_meta(key)
        if entry is not None and is_fresh(entry.fetched_at, self.ttl, self.clock()):
            return Served(entry, "hit")
        if entry is None and self.index.is_missing(key, self.clock()):
            raise NotFound(f"not found upstream (remembered for {self.negative_ttl:g}s)")
        async with self.locks.hold("meta:" + key):
            latest = self.index.get_meta(key)
            if (
                latest is not None
                and latest != entry
                and is_fresh(latest.fetched_at, self.ttl, self.clock())
            ):
                return Served(latest, "coalesced")
            try:
                return await self._refresh(key, channel, latest, urls, build)
            except UpstreamNotFound:
                self.index.remember_missing(
                    key, self.clock() + self.negative_ttl, self.negative_ttl
                )
                raise
            except UpstreamError as exc:
                if latest is None:
                    raise
                log.warning("serving stale copy", key=key, reason=exc.message)
                return Served(latest, "stale")

    async def _refresh(
        self,
        key: str,
        channel: ChannelSettings,
        entry: MetaEntry | None,
        urls: Sequence[str],
        build: BuildFn,
    ) -> Served:
        candidates = [entry.source_url] if entry is not None else list(urls)
        for i, url in enumerate(candidates):
            headers = {"accept-encoding": "gzip, deflate"}
            if entry is not None:
                if entry.etag:
                    headers["if-none-match"] = entry.etag
                if entry.last_modified:
                    headers["if-modified-since"] = entry.last_modified
            try:
                async with self.upstream.open(channel, url, headers=headers) as response:
                    etag = response.headers.get("etag")
                    modified = response.headers.get("last-modified")
                    if response.status == 304 and entry is not None:
                        # RFC 9111 §4.3.4: a 304 freshens the stored response.
                        fresh = dataclasses.replace(
                            entry,
                            fetched_at=self.clock(),
                            etag=etag or entry.etag,
                            last_modified=modified or entry.last_modified,
                        )
                        self.index.put_meta(key, fresh)
                        return Served(fresh, "revalidated")
                    if response.status == 304:
                        raise UpstreamError(
                            response.url, "answered 304 to an unconditional request"
                        )
                    body = b"".join([chunk async for chunk in response.iter_decoded()])
            except UpstreamNotFound:
                if i == len(candidates) - 1:
                    raise
                continue
            built = await asyncio.to_thread(build, body, url)
            new = await asyncio.to_thread(self._commit, key, entry, url, etag, modified, built)
            outcome = (
                "revalidated" if entry is not None and entry.digest == built.digest else "miss"
            )
            return Served(new, outcome)
        raise AssertionError("no candidate URL")  # pragma: no cover - urls is never empty

    def _commit(
        self,
        key: str,
        old: MetaEntry | None,
        url: str,
        etag: str | None,
        modified: str | None,
        built: Built,
    ) -> MetaEntry:
        store = self.store_for(key)
        now = self.clock()
        variants: dict[str, Variant] = {}
        for name, data in built.variants.items():
            sha = hashlib.sha256(data).hexdigest()
            if not store.exists(sha):
                store.put_bytes(data, sha)
            variants[name] = Variant(sha, len(data))
        unchanged = old is not None and old.digest == built.digest
        entry = MetaEntry(
            source_url=url,
            etag=etag,
            last_modified=modified,
            fetched_at=now,
            changed_at=old.changed_at if unchanged and old is not None else now,
            digest=built.digest,
            variants={**(old.variants if unchanged and old else {}), **variants},
            origins=built.origins,
        )
        self.index.put_meta(key, entry)
        self.index.forget_missing(key)
        if old is not None:
            keep = {v.sha256 for v in entry.variants.values()}
            for variant in old.variants.values():
                if variant.sha256 not in keep:
                    store.delete(variant.sha256)  # open readers keep their descriptor
        return entry

    def put_derived(
        self, key: str, source: str, digest: str, files: dict[str, tuple[str, str, int]]
    ) -> MetaEntry:
        """Adopt already written (and fsynced) files as the variants of `key`, derived from
        `source` rather than fetched: merged repodata and shard indexes."""
        store = self.store_for(key)
        old = self.index.get_meta(key)
        variants = {}
        for name, (path, sha, size) in files.items():
            final = store.path_for(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
            variants[name] = Variant(sha, size)
        now = self.clock()
        unchanged = old is not None and old.digest == digest
        entry = MetaEntry(
            source_url=source,
            etag=None,
            last_modified=None,
            fetched_at=now,
            changed_at=old.changed_at if unchanged and old is not None else now,
            digest=digest,
            variants=variants,
        )
        self.index.put_meta(key, entry)
        if old is not None:
            keep = {v.sha256 for v in variants.values()}
            for variant in old.variants.values():
                if variant.sha256 not in keep:
                    store.delete(variant.sha256)
        return entry

    async def add_variant(
        self, key: str, entry: MetaEntry, name: str, make: Callable[[MetaEntry], bytes]
    ) -> MetaEntry:
        """Derive a variant lazily (e.g. .bz2) from the current snapshot, once across workers."""
        async with self.locks.hold("meta:" + key):
            current = self.index.get_meta(key) or entry
            if name in current.variants:
                return current
            data = await asyncio.to_thread(make, current)
            sha = hashlib.sha256(data).hexdigest()
            store = self.store_for(key)
            await asyncio.to_thread(store.put_bytes, data, sha)
            updated = dataclasses.replace(
                current, variants={**current.variants, name: Variant(sha, len(data))}
            )
            self.index.put_meta(key, updated)
            return updated
