"""Immutable files, packages and shards: hits from the store, misses through a verified
download, and where each file really lives upstream.

A hit is checked against the client's own X-Expected-Sha256 before a byte goes out; a miss
learns what the channel publishes for the file first (checksums.py), and a HEAD of a listed
package is answered from its record alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import structlog

from ..rules.conditional import if_none_match_hits, strong_etag
from ..rules.errors import NotFound, ServiceUnavailable, UpstreamError
from ..rules.merge import Record
from ..rules.routing import SHARD_INDEX, Kind, ResourcePath
from ..settings import ChannelSettings
from ..storage.blobs import BlobStore, DamagedBlob, NotChecked
from ..storage.index import FileEntry, Index
from ..storage.keys import MetaKey
from .checksums import Checksums, client_claim, reconcile
from .derived import Derived
from .downloads import Downloads
from .eviction import Evictor
from .merging import decode_shard
from .metadata import MetadataCache, Served
from .results import IMMUTABLE, UNLISTED, Asked, Result, Stored, Streamed
from .tails import Body
from .transfer import AlreadyCached, ClientAbort, Expected, Head, bytes_of, content_type
from .upstream import UpstreamClient, join_url, used
from .views import Views

log = structlog.get_logger("condaproxy.cache")
T = TypeVar("T")


class Packages:
    def __init__(
        self,
        channels: Mapping[str, ChannelSettings],
        index: Index,
        store: BlobStore,
        meta: MetadataCache,
        downloads: Downloads,
        upstream: UpstreamClient,
        evictor: Evictor,
        derived: Derived,
    ) -> None:
        self.channels = channels
        self.index = index
        self.store = store
        self.downloads = downloads
        self.upstream = upstream
        self.evictor = evictor
        self.views = Views(meta, upstream, self.url, derived, meta.clock)
        self.checksums = Checksums(
            index,
            meta,
            self._record_repodata,
            self._record_shard_index,
            self._shard_records,
            self.views.with_json,
            self.views.derived.schedule,
            self.views.derived.materialise,
        )

    async def serve(self, rp: ResourcePath, channel: ChannelSettings, asked: Asked) -> Result:
        claim = client_claim(asked.headers) if rp.kind is Kind.PACKAGE else None
        entry = self.index.get_file(rp.key)
        if entry is not None:
            reconcile(rp.key, Expected(sha256=entry.sha256), claim)
            hit = await self.hit(entry)
            if hit is not None:
                return hit
            self.index.forget_gone_file(rp.key)  # the blob went away behind our back: a miss
        expected = await self.checksums.expected(rp)
        reconcile(rp.key, expected, claim)
        if expected.size is not None and expected.sha256 and _answered_by_record(asked, expected):
            # The record says all this answer needs: no download for a question about headers
            # (a HEAD), nor for a client that already holds these bytes (its If-None-Match
            # names the sha256, the ETag every answer for this file carries: a 304).
            return Streamed(
                Head(expected.size, content_type(rp.key), expected.sha256), None, "miss"
            )
        try:
            head, body, outcome = await self.downloads.start(
                rp.key, channel, self.url(channel, rp), expected, claim
            )
        except AlreadyCached as cached:
            hit = await self.hit(cached.entry)
            if hit is None:
                raise UpstreamError(rp.key, "cached file vanished") from None
            return hit
        return Streamed(head, body, outcome, IMMUTABLE if expected.listed else UNLISTED)

    async def hit(self, entry: FileEntry, store: BlobStore | None = None) -> Stored | None:
        """A stored file (None if its blob is gone). Cached blobs are touched for LRU and kept
        from eviction while served; uploads live in their own store and are never evicted.

        A blob is served only as the bytes its entry names (its size, and its sha256 checked
        once per process): a damaged cached copy is dropped (None: a miss fetches it again);
        a damaged upload, or a shard derived from uploads, is refused, never sent."""
        blobs = store or self.store
        try:
            try:  # on the loop when nothing needs hashing (the usual hit), else in a thread
                fd = blobs.open_checked(entry.sha256, entry.size, may_hash=False)
            except NotChecked:
                fd = await asyncio.to_thread(blobs.open_checked, entry.sha256, entry.size)
        except FileNotFoundError:
            return None
        except DamagedBlob as damaged:
            log.error("damaged blob refused", sha256=entry.sha256, reason=damaged.why)
            if store is not None or entry.local:
                raise ServiceUnavailable(
                    f"the stored copy of this file is damaged ({damaged.why}); an admin must "
                    "upload it again"
                ) from None
            blobs.discard_damaged(entry.sha256)
            return None
        result = Stored(
            size=entry.size,
            content_type=entry.content_type,
            etag=strong_etag(entry.sha256),
            modified=entry.stored_at,
            cache_control=IMMUTABLE,
            outcome="hit",
            fd=fd,
        )
        if store is None:
            sha = entry.sha256
            self.evictor.touch(sha)
            result.on_open = lambda: self.evictor.begin_serving(sha)
            result.on_close = lambda: self.evictor.end_serving(sha)
        return result

    async def start(
        self, rp: ResourcePath, channel: ChannelSettings, claim: str | None = None
    ) -> tuple[Head, Body, str]:
        """Join or start the verified download of a package or shard."""
        expected = await self.checksums.expected(rp)
        reconcile(rp.key, expected, claim)
        return await self.downloads.start(rp.key, channel, self.url(channel, rp), expected, claim)

    async def warm(self, rp: ResourcePath, channel: ChannelSettings) -> str:
        """Make sure a file is cached: "hit" if it already was."""
        if self.downloads.cached(rp.key):
            return "hit"
        if channel.upstream is None:
            raise NotFound(f"{rp.relative} is not in local channel '{channel.name}'")
        try:
            head, body, _ = await self.start(rp, channel)
        except AlreadyCached:
            return "hit"
        await self._collect(rp, channel, head, body, keep=False)
        return "miss"

    async def bytes_of(self, rp: ResourcePath, channel: ChannelSettings) -> bytes:
        """A (small) immutable file's bytes, from the store or fetched and verified."""
        return await self.decoded_of(rp, channel, bytes)

    async def decoded_of(
        self, rp: ResourcePath, channel: ChannelSettings, decode: Callable[[bytes], T]
    ) -> T:
        """`decode` of a (small) immutable file's bytes, run in a thread: a cached file is read
        (checked as every served blob is: its size, and its sha256 once per process) and
        decoded in one hop. A damaged cached copy is dropped and the file fetched again."""
        for _ in range(2):
            found = await self._fetched_or_cached(rp, channel)
            if isinstance(found, bytes):
                return await asyncio.to_thread(decode, found)
            try:
                return await asyncio.to_thread(self._read_checked, found, decode)
            except FileNotFoundError:
                self.index.forget_gone_file(rp.key)  # gone behind our back: fetch it again
            except DamagedBlob as damaged:
                log.error("damaged blob refused", sha256=found.sha256, reason=damaged.why)
                self.store.discard_damaged(found.sha256)
                self.index.forget_gone_file(rp.key)
        raise UpstreamError(rp.key, "the cached copy went away twice while it was read")

    def _read_checked(self, entry: FileEntry, decode: Callable[[bytes], T]) -> T:
        fd = self.store.open_checked(entry.sha256, entry.size)
        with os.fdopen(fd, "rb") as f:
            return decode(f.read())

    async def _fetched_or_cached(
        self, rp: ResourcePath, channel: ChannelSettings
    ) -> bytes | FileEntry:
        """The entry of a cached file, else the file's bytes, fetched and verified."""
        entry = self.downloads.cached(rp.key)
        if entry is not None:
            return entry
        try:
            head, body, _ = await self.start(rp, channel)
        except AlreadyCached as cached:
            return cached.entry
        return await self._collect(rp, channel, head, body, keep=True)

    async def _collect(
        self, rp: ResourcePath, channel: ChannelSettings, head: Head, body: Body, keep: bool
    ) -> bytes:
        """A download read by the proxy itself (a shard for a package's checksum, a prefetch).
        Its failure midway is the upstream's, for whoever needed the bytes: nothing was sent
        to a client yet, so a 502 naming the upstream, not an aborted connection."""
        pieces: list[bytes] = []
        try:
            async for chunk in body.chunks(0, head.size):
                if keep:
                    pieces.append(bytes_of(chunk))
        except ClientAbort as exc:
            shown = self.upstream.redact(self.url(channel, rp))  # no credentials
            raise UpstreamError(shown, str(exc)) from None
        finally:
            await body.aclose()
        return b"".join(pieces)

    def url(self, channel: ChannelSettings, rp: ResourcePath) -> str:
        """Where the file really is: CEP-15/16 base URLs seen in metadata win over the layout."""
        if rp.kind in (Kind.PACKAGE, Kind.SHARD):
            keys = [MetaKey.shard_index(rp.subdir_key)]
            if rp.kind is Kind.PACKAGE:
                keys.insert(0, MetaKey.repodata(rp.subdir_key))
            for key in keys:
                entry = self.index.get_meta(key)
                if entry is None:
                    continue
                base = entry.origins.packages if rp.kind is Kind.PACKAGE else entry.origins.shards
                base = used(channel, base)  # kept without the channel's credentials
                if base:
                    return join_url(base, rp.filename)
        return self.upstream.url_for(channel, rp.relative)

    # where checksums come from (checksums.py decides the order)

    async def _record_repodata(self, rp: ResourcePath) -> Served:
        return await self.views.repodata(rp, self._channel(rp))

    async def _record_shard_index(self, rp: ResourcePath) -> Served:
        index_rp = dataclasses.replace(rp, filename=SHARD_INDEX, kind=Kind.SHARD_INDEX)
        return await self.views.shard_index(index_rp, self._channel(rp))

    async def _shard_records(self, rp: ResourcePath) -> dict[str, Record]:
        return await self.decoded_of(rp, self._channel(rp), decode_shard)

    def _channel(self, rp: ResourcePath) -> ChannelSettings:
        return self.channels[rp.channel]


def _answered_by_record(asked: Asked, expected: Expected) -> bool:
    """A HEAD, or a request whose If-None-Match matches the published sha256's ETag."""
    if asked.method == "HEAD":
        return True
    tag = strong_etag(expected.sha256) if expected.sha256 else None
    return if_none_match_hits(asked.headers.get("if-none-match"), tag)
