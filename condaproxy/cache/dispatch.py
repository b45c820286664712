"""The proxy's core: a parsed request in, an ASGI response out. Handlers only parse and call."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zstandard

from ..rules.codecs import decode_msgpack, zstd_decompress
from ..rules.conditional import if_range_allows, remaining_max_age, strong_etag
from ..rules.errors import NotFound, RangeNotSatisfiable, UpstreamError
from ..rules.ranges import parse_range
from ..rules.routing import REPODATA_VARIANTS as REPODATA_FILES
from ..rules.routing import SHARD_INDEX, Kind, ResourcePath, parse_path
from ..settings import ChannelSettings
from ..storage.blobs import BlobStore
from ..storage.index import FileEntry, Index, MetaEntry
from ..storage.uploads import UploadStore
from ..web.responses import (
    EmptyResponse,
    FileResponse,
    Representation,
    StreamResponse,
    respond_with_file,
)
from .builds import REPODATA_VARIANTS, build_bz2, build_repodata, build_shard_index
from .checksums import Checksums, client_claim, reconcile
from .downloads import Downloads
from .eviction import Evictor
from .metadata import MetadataCache, Served, identity_build
from .overlay import Overlay, decode_shard
from .tails import Body
from .transfer import AlreadyCached, Expected, Head, content_type
from .upstream import UpstreamClient, join_url

log = structlog.get_logger("condaproxy.cache.dispatch")

IMMUTABLE = "public, max-age=31536000, immutable"
STALE_WARNING = '110 - "Response is Stale"'


@dataclass
class Asked:
    """What the client sent that shapes the answer: conditionals, ranges, the method; and the
    per-request state the access log reads (channel, cache outcome)."""

    headers: Mapping[str, str]
    method: str
    state: Any


class Proxy:
    def __init__(
        self,
        channels: Mapping[str, ChannelSettings],
        index: Index,
        store: BlobStore,
        meta: MetadataCache,
        downloads: Downloads,
        upstream: UpstreamClient,
        ttl: float,
        uploads: UploadStore,
        overlay: Overlay,
        evictor: Evictor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.evictor = evictor
        self.uploads = uploads
        self.overlay = overlay
        self.channels = channels
        self.index = index
        self.store = store
        self.meta = meta
        self.downloads = downloads
        self.upstream = upstream
        self.ttl = ttl
        self.clock = clock
        self.checksums = Checksums(
            index, meta, self._record_repodata, self._record_shard_index, self._shard_bytes
        )

    async def serve(self, rp: ResourcePath, asked: Asked) -> Any:
        channel = self.channels[rp.channel]
        if rp.kind is Kind.PACKAGE and (local := self._local_upload(channel, rp)) is not None:
            return self._file_hit(local, asked, self.uploads.blobs)
        if rp.kind in (Kind.REPODATA, Kind.SHARD_INDEX) and self._overlaid(channel, rp):
            if rp.kind is Kind.REPODATA:
                return await self._merged_repodata(rp, channel, asked)
            return await self._merged_shard_index(rp, channel, asked)
        if channel.upstream is None:
            entry = self.index.get_file(rp.key) if rp.kind is Kind.SHARD else None
            if entry is not None and (hit := self._file_hit(entry, asked)) is not None:
                return hit
            raise NotFound(f"'{rp.relative}' is not in local channel '{channel.name}'")
        if rp.kind in (Kind.PACKAGE, Kind.SHARD):
            return await self._immutable(rp, channel, asked)
        if rp.kind is Kind.REPODATA:
            return await self._repodata(rp, channel, asked)
        if rp.kind is Kind.SHARD_INDEX:
            key = "shards:" + rp.subdir_key
            served = await self._upstream_shard_index(rp, channel)
            return self._metadata_response(key, served, "body", "application/octet-stream", asked)
        key = "meta:" + rp.key
        served = await self.meta.get(key, channel, [self._url(channel, rp)], identity_build)
        ctype = "application/json" if rp.filename.endswith(".json") else "application/octet-stream"
        return self._metadata_response(key, served, "body", ctype, asked)

    # prefetch

    def _resource(self, channel: str, subdir: str, filename: str) -> ResourcePath:
        return parse_path(f"/{channel}/{subdir}/{filename}", self.channels)

    async def repodata_path(self, channel_name: str, subdir: str) -> Path | None:
        """The repodata.json a client of this channel sees for `subdir` (merged if uploads
        are over it), fetched or revalidated as needed; None if the subdir does not exist."""
        rp = self._resource(channel_name, subdir, "repodata.json")
        asked = Asked({}, "HEAD", _Discard())
        channel = self.channels[channel_name]
        try:
            if self._overlaid(channel, rp):
                await self._merged_repodata(rp, channel, asked)
                key = "merged:" + rp.subdir_key
            else:
                await self._upstream_repodata(rp, channel)
                key = "repodata:" + rp.subdir_key
        except NotFound:
            return None
        entry = self.index.get_meta(key)
        return self.meta.variant_path(key, entry.variants["json"]) if entry else None

    async def warm(self, channel_name: str, subdir: str, filename: str) -> str:
        """Make sure a file is in the cache (or is an upload): "hit" if it already was."""
        rp = self._resource(channel_name, subdir, filename)
        channel = self.channels[channel_name]
        if self._local_upload(channel, rp) is not None or self.downloads.cached(rp.key):
            return "hit"
        if channel.upstream is None:
            raise NotFound(f"{subdir}/{filename} is not in local channel '{channel_name}'")
        try:
            head, body, _ = await self._start_download(rp, channel, None)
        except AlreadyCached:
            return "hit"
        try:
            async for _ in body.chunks(0, head.size):
                pass
        finally:
            await body.aclose()
        return "miss"

    # uploads merged over the upstream

    def _overlaid(self, channel: ChannelSettings, rp: ResourcePath) -> bool:
        """Uploads live at the channel root (not under labels); a local-only channel is all
        overlay."""
        if rp.prefix or rp.subdir is None or channel.mirror_only:
            return False
        return channel.upstream is None or rp.subdir in self.uploads.subdirs(channel.name)

    def _local_upload(self, channel: ChannelSettings, rp: ResourcePath) -> FileEntry | None:
        if channel.mirror_only or rp.prefix or rp.subdir is None:
            return None
        upload = self.uploads.get(channel.name, rp.subdir, rp.filename)
        if upload is None:
            return None
        return FileEntry(upload.sha256, upload.size, upload.uploaded_at, content_type(rp.filename))

    def _local_records(self, channel: ChannelSettings, subdir: str) -> dict[str, dict[str, Any]]:
        return {fn: u.record for fn, u in self.uploads.current(channel.name, subdir).items()}

    async def _merged_repodata(
        self, rp: ResourcePath, channel: ChannelSettings, asked: Asked
    ) -> Any:
        subdir = rp.subdir or "noarch"
        local = self._local_records(channel, subdir)
        upstream_entry, outcome, upstream_path = None, "hit", None
        if channel.upstream is not None:
            try:
                served = await self._upstream_repodata(rp, channel)
                upstream_entry, outcome = served.entry, served.outcome
                key = "repodata:" + rp.subdir_key
                upstream_path = self.meta.variant_path(key, upstream_entry.variants["json"])
            except NotFound:
                pass  # the upstream has no such subdir: the uploads are all there is
        if not local and upstream_entry is None and subdir != "noarch":
            # noarch always exists (a 404 there is fatal for every client); others may not.
            raise NotFound(f"channel '{channel.name}' has no packages for {subdir}")
        generation = self.uploads.generation(channel.name, subdir)
        source = f"{upstream_entry.digest if upstream_entry else '-'}+{generation}"
        key = "merged:" + rp.subdir_key
        merged = await self.overlay.repodata(
            key, source, upstream_path, local, subdir, channel.allow_upstream
        )
        # Freshness follows the upstream copy the merge was made from.
        fetched_at = upstream_entry.fetched_at if upstream_entry else None
        return await self._repodata_response(key, Served(merged, outcome), rp, asked, fetched_at)

    async def _merged_shard_index(
        self, rp: ResourcePath, channel: ChannelSettings, asked: Asked
    ) -> Any:
        subdir = rp.subdir or "noarch"
        local = self._local_records(channel, subdir)
        upstream_bytes, digest, outcome = None, "-", "hit"
        upstream_shards: dict[str, dict[str, Any]] = {}
        if channel.upstream is not None:
            # No upstream shards means clients must read repodata.json, which is merged too.
            served = await self._upstream_shard_index(rp, channel)
            digest, outcome = served.entry.digest, served.outcome
            path = self.meta.variant_path("shards:" + rp.subdir_key, served.entry.variants["body"])
            upstream_bytes = await asyncio.to_thread(path.read_bytes)
            upstream_shards = await self._allowed_upstream_shards(
                rp, channel, upstream_bytes, local
            )
        elif not local:
            raise NotFound(f"channel '{channel.name}' has no packages for {subdir}")
        generation = self.uploads.generation(channel.name, subdir)
        source = f"{digest}+{generation}"
        key = "merged-shards:" + rp.subdir_key
        merged = await self.overlay.shard_index(
            key, source, f"{channel.name}/{subdir}", upstream_bytes, local, subdir, upstream_shards
        )
        shown = Served(merged, outcome)
        return self._metadata_response(key, shown, "body", "application/octet-stream", asked)

    async def _allowed_upstream_shards(
        self,
        rp: ResourcePath,
        channel: ChannelSettings,
        upstream_index: bytes,
        local: dict[str, dict[str, Any]],
    ) -> dict[str, dict[str, Any]]:
        """Upstream records of local names listed in allow_upstream, read from their shards."""
        allowed = {str(r["name"]) for r in local.values()} & set(channel.allow_upstream)
        if not allowed:
            return {}
        index = decode_msgpack(zstd_decompress(upstream_index, self.meta.max_document))
        found = {}
        for name in sorted(allowed):
            digest = (index.get("shards") or {}).get(name)
            if not isinstance(digest, bytes):
                continue
            filename = f"{digest.hex()}.msgpack.zst"
            shard_rp = dataclasses.replace(rp, filename=filename, kind=Kind.SHARD)
            data = await self._immutable_bytes(shard_rp, channel)
            try:
                found[name] = decode_shard(data)
            except (ValueError, TypeError, zstandard.ZstdError) as exc:
                raise UpstreamError(shard_rp.key, f"unusable shard: {exc}"[:300]) from None
        return found

    async def _immutable_bytes(self, rp: ResourcePath, channel: ChannelSettings) -> bytes:
        entry = self.downloads.cached(rp.key)
        if entry is None:
            try:
                head, body, _ = await self._start_download(rp, channel, None)
            except AlreadyCached as cached:
                entry = cached.entry
            else:
                try:
                    return b"".join([chunk async for chunk in body.chunks(0, head.size)])
                finally:
                    await body.aclose()
        return await asyncio.to_thread(self.store.path_for(entry.sha256).read_bytes)

    # where checksums come from (checksums.py decides the order)

    async def _record_repodata(self, rp: ResourcePath) -> Served:
        return await self._upstream_repodata(rp, self.channels[rp.channel])

    async def _record_shard_index(self, rp: ResourcePath) -> Served:
        index_rp = dataclasses.replace(rp, filename=SHARD_INDEX, kind=Kind.SHARD_INDEX)
        return await self._upstream_shard_index(index_rp, self.channels[rp.channel])

    async def _shard_bytes(self, rp: ResourcePath) -> bytes:
        return await self._immutable_bytes(rp, self.channels[rp.channel])

    async def _upstream_shard_index(self, rp: ResourcePath, channel: ChannelSettings) -> Served:
        key = "shards:" + rp.subdir_key
        try:
            return await self.meta.get(key, channel, [self._url(channel, rp)], build_shard_index)
        except UpstreamError as exc:
            # CEP-16 clients fall back to repodata.json on 404, but rattler aborts the whole
            # solve on a 5xx: with nothing cached, "no shards" is the answer that works.
            log.warning("shard index unavailable, answering 404", reason=exc.message)
            raise NotFound(f"shard index unavailable: {exc.message}") from None

    # metadata

    async def _upstream_repodata(self, rp: ResourcePath, channel: ChannelSettings) -> Served:
        key = "repodata:" + rp.subdir_key
        base = join_url(self.upstream.url_for(channel, rp.prefix), rp.subdir or "")
        urls = [join_url(base, "repodata.json.zst"), join_url(base, "repodata.json")]
        return await self.meta.get(key, channel, urls, build_repodata)

    async def _repodata(self, rp: ResourcePath, channel: ChannelSettings, asked: Asked) -> Any:
        key = "repodata:" + rp.subdir_key
        served = await self._upstream_repodata(rp, channel)
        return await self._repodata_response(key, served, rp, asked)

    async def _repodata_response(
        self,
        key: str,
        served: Served,
        rp: ResourcePath,
        asked: Asked,
        fetched_at: float | None = None,
    ) -> Any:
        """The variant `rp` names of a snapshot (upstream or merged); .bz2 is made on first
        request. `fetched_at` overrides the entry's, for freshness shown to clients."""
        name = REPODATA_FILES[rp.filename]
        blob_variant, ctype = REPODATA_VARIANTS[name]
        entry = served.entry
        if blob_variant not in entry.variants:
            entry = await self.meta.add_variant(key, entry, blob_variant, self._bz2_of(key))
        if fetched_at is not None:
            entry = dataclasses.replace(entry, fetched_at=fetched_at)
        shown = Served(entry, served.outcome)
        return self._metadata_response(key, shown, name, ctype, asked, blob_variant)

    def _bz2_of(self, key: str) -> Callable[[MetaEntry], bytes]:
        def make(entry: MetaEntry) -> bytes:
            return build_bz2(self.meta.variant_path(key, entry.variants["json"]).read_bytes())

        return make

    def _metadata_response(
        self,
        key: str,
        served: Served,
        name: str,
        ctype: str,
        asked: Asked,
        blob_variant: str | None = None,
    ) -> Any:
        entry = served.entry
        variant = entry.variants[blob_variant or name]
        stale = served.outcome == "stale"
        max_age = 0 if stale else remaining_max_age(entry.fetched_at, self.ttl, self.clock())
        rep = Representation(
            size=variant.size,
            content_type=ctype,
            # One strong ETag per URL: the snapshot's digest plus the variant name.
            etag=strong_etag(f"{entry.digest[:40]}-{name}"),
            modified=entry.changed_at,
            cache_control=f"public, max-age={max_age}",
            outcome=served.outcome,
            headers={"warning": STALE_WARNING} if stale else {},
        )
        asked.state.outcome = served.outcome
        return respond_with_file(
            rep, lambda: self.meta.open_variant(key, variant), asked.headers, asked.method
        )

    # packages and shards

    async def _immutable(self, rp: ResourcePath, channel: ChannelSettings, asked: Asked) -> Any:
        claim = client_claim(asked.headers) if rp.kind is Kind.PACKAGE else None
        entry = self.index.get_file(rp.key)
        if entry is not None:
            reconcile(rp.key, Expected(sha256=entry.sha256), claim)
            response = self._file_hit(entry, asked)
            if response is not None:
                return response
            self.index.forget_file(rp.key)  # the blob went away behind our back: a miss
        expected = await self.checksums.expected(rp)
        reconcile(rp.key, expected, claim)
        if asked.method == "HEAD" and expected.size is not None and expected.sha256:
            # The record says all a HEAD needs: no download for a question about headers.
            asked.state.outcome = "miss"
            head = Head(expected.size, content_type(rp.key), expected.sha256)
            return self._stream_response(head, None, "miss", asked)
        try:
            head, body, outcome = await self.downloads.start(
                rp.key, channel, self._url(channel, rp), expected, claim
            )
        except AlreadyCached as cached:
            response = self._file_hit(cached.entry, asked)
            if response is None:
                raise UpstreamError(rp.key, "cached file vanished") from None
            return response
        asked.state.outcome = outcome
        return self._stream_response(head, body, outcome, asked)

    def _stream_response(self, head: Head, body: Body | None, outcome: str, asked: Asked) -> Any:
        """Headers for a miss from what is known before the body; ranges only where the body
        can serve them (otherwise the whole file: RFC 9110 §14.2 lets a server ignore Range)."""
        etag = strong_etag(head.sha256) if head.sha256 else None
        start, end, status = 0, head.size, 200
        ranges = body is None or body.ranges
        if (
            ranges
            and head.size is not None
            and if_range_allows(asked.headers.get("if-range"), etag, None)
        ):
            try:
                span = parse_range(asked.headers.get("range"), head.size)
            except RangeNotSatisfiable:
                if body is not None:
                    return StreamResponse(
                        416, [(b"content-range", f"bytes */{head.size}".encode())], body, 0, 0
                    )
                return EmptyResponse(416, [(b"content-range", f"bytes */{head.size}".encode())])
            if span is not None:
                start, end, status = span[0], span[1], 206
        out = [
            (b"content-type", head.content_type.encode()),
            (b"cache-control", IMMUTABLE.encode()),
            (b"accept-ranges", b"bytes"),
            (b"x-cache", outcome.upper().encode()),
        ]
        if end is not None:
            out.append((b"content-length", str(end - start).encode()))
        if status == 206:
            out.append((b"content-range", f"bytes {start}-{end - 1}/{head.size}".encode()))  # type: ignore[operator]
        if etag:
            out.append((b"etag", etag.encode()))
        return StreamResponse(status, out, body, start, end, head_only=asked.method == "HEAD")

    def _file_hit(self, entry: FileEntry, asked: Asked, store: BlobStore | None = None) -> Any:
        rep = Representation(
            size=entry.size,
            content_type=entry.content_type,
            etag=strong_etag(entry.sha256),
            modified=entry.stored_at,
            cache_control=IMMUTABLE,
            outcome="hit",
        )
        try:
            fd = (store or self.store).open(entry.sha256)
        except FileNotFoundError:
            return None
        asked.state.outcome = "hit"
        response = respond_with_file(rep, lambda: fd, asked.headers, asked.method)
        if not isinstance(response, FileResponse):
            os.close(fd)  # 304 or 416: no body to read
        elif store is None:  # a cached blob (uploads are never evicted)
            sha = entry.sha256
            self.evictor.touch(sha)
            self.evictor.begin_serving(sha)
            response.on_close = lambda: self.evictor.end_serving(sha)
        return response

    async def _start_download(
        self, rp: ResourcePath, channel: ChannelSettings, claim: str | None
    ) -> tuple[Head, Body, str]:
        """Join or start the verified download of a package or shard."""
        expected = await self.checksums.expected(rp)
        reconcile(rp.key, expected, claim)
        return await self.downloads.start(rp.key, channel, self._url(channel, rp), expected, claim)

    def _url(self, channel: ChannelSettings, rp: ResourcePath) -> str:
        """Where the file really is: CEP-15/16 base URLs seen in metadata win over the layout."""
        if rp.kind in (Kind.PACKAGE, Kind.SHARD):
            for key in ("repodata:", "shards:") if rp.kind is Kind.PACKAGE else ("shards:",):
                entry = self.index.get_meta(key + rp.subdir_key)
                if entry is None:
                    continue
                base = entry.origins.packages if rp.kind is Kind.PACKAGE else entry.origins.shards
                if base:
                    return join_url(base, rp.filename)
        return self.upstream.url_for(channel, rp.relative)


class _Discard:
    """Request state for internal calls: nothing to log."""

    def __setattr__(self, name: str, value: Any) -> None:
        pass
