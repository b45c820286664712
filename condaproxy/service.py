"""The proxy's core: a parsed request in, an ASGI response out. Handlers only parse and call."""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from .conditional import if_range_allows, remaining_max_age, strong_etag
from .downloads import AlreadyCached, Downloads, Expected
from .errors import BadRequest, NotFound, RangeNotSatisfiable, UpstreamError
from .index import FileEntry, Index, MetaEntry
from .metadata import BuildFn, MetadataCache, Served, identity_build
from .ranges import parse_range
from .records import find_record
from .repodata import REPODATA_VARIANTS, build_bz2, build_repodata, build_shard_index
from .responses import (
    EmptyResponse,
    FileResponse,
    Representation,
    StreamResponse,
    respond_with_file,
)
from .routing import REPODATA_VARIANTS as REPODATA_FILES
from .routing import Kind, ResourcePath
from .settings import ChannelSettings
from .store import BlobStore
from .upstream import UpstreamClient, join_url

log = structlog.get_logger("condaproxy.service")

IMMUTABLE = "public, max-age=31536000, immutable"
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channels = channels
        self.index = index
        self.store = store
        self.meta = meta
        self.downloads = downloads
        self.upstream = upstream
        self.ttl = ttl
        self.clock = clock

    async def serve(self, rp: ResourcePath, asked: Asked) -> Any:
        channel = self.channels[rp.channel]
        if rp.kind in (Kind.PACKAGE, Kind.SHARD):
            return await self._immutable(rp, channel, asked)
        if rp.kind is Kind.REPODATA:
            return await self._repodata(rp, channel, asked)
        if rp.kind is Kind.SHARD_INDEX:
            key = "shards:" + rp.subdir_key
            try:
                served = await self.meta.get(
                    key, channel, [self._url(channel, rp)], build_shard_index
                )
            except UpstreamError as exc:
                # CEP-16 clients fall back to repodata.json on 404, but rattler aborts the whole
                # solve on a 5xx: with nothing cached, "no shards" is the answer that works.
                log.warning("shard index unavailable, answering 404", reason=exc.message)
                raise NotFound(f"shard index unavailable: {exc.message}") from None
            return self._metadata_response(key, served, "body", "application/octet-stream", asked)
        key = "meta:" + rp.key
        served = await self.meta.get(key, channel, [self._url(channel, rp)], identity_build)
        ctype = "application/json" if rp.filename.endswith(".json") else "application/octet-stream"
        return self._metadata_response(key, served, "body", ctype, asked)

    # metadata

    async def _repodata(self, rp: ResourcePath, channel: ChannelSettings, asked: Asked) -> Any:
        key = "repodata:" + rp.subdir_key
        base = join_url(self.upstream.url_for(channel, rp.prefix), rp.subdir or "")
        urls = [join_url(base, "repodata.json.zst"), join_url(base, "repodata.json")]
        build: BuildFn = build_repodata
        served = await self.meta.get(key, channel, urls, build)
        name = REPODATA_FILES[rp.filename]
        blob_variant, ctype = REPODATA_VARIANTS[name]
        if blob_variant not in served.entry.variants:
            entry = await self.meta.add_variant(key, served.entry, blob_variant, self._bz2_of(key))
            served = Served(entry, served.outcome)
        return self._metadata_response(key, served, name, ctype, asked, blob_variant)

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
        path = self.meta.variant_path(key, variant)
        return respond_with_file(
            rep, lambda: os.open(path, os.O_RDONLY), asked.headers, asked.method
        )

    # packages and shards

    async def _immutable(self, rp: ResourcePath, channel: ChannelSettings, asked: Asked) -> Any:
        entry = self.index.get_file(rp.key)
        if entry is not None:
            response = self._file_hit(entry, asked)
            if response is not None:
                return response
            self.index.forget_file(rp.key)  # the blob went away behind our back: a miss
        expected = await self._expected(rp, asked.headers)
        url = self._url(channel, rp)
        try:
            head, reader, outcome = await self.downloads.start(rp.key, channel, url, expected)
        except AlreadyCached as cached:
            response = self._file_hit(cached.entry, asked)
            if response is None:
                raise UpstreamError(url, "cached file vanished") from None
            return response
        asked.state.outcome = outcome
        etag = strong_etag(head.sha256) if head.sha256 else None
        start, end, status = 0, head.size, 200
        if head.size is not None and if_range_allows(asked.headers.get("if-range"), etag, None):
            try:
                span = parse_range(asked.headers.get("range"), head.size)
            except RangeNotSatisfiable:
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
        body = None if asked.method == "HEAD" else reader(start, end)
        return StreamResponse(status, out, body)

    def _file_hit(self, entry: FileEntry, asked: Asked) -> Any:
        rep = Representation(
            size=entry.size,
            content_type=entry.content_type,
            etag=strong_etag(entry.sha256),
            modified=entry.stored_at,
            cache_control=IMMUTABLE,
            outcome="hit",
        )
        try:
            fd = self.store.open(entry.sha256)
        except FileNotFoundError:
            return None
        asked.state.outcome = "hit"
        response = respond_with_file(rep, lambda: fd, asked.headers, asked.method)
        if not isinstance(response, FileResponse):
            os.close(fd)  # 304 or 416: no body to read
        return response

    async def _expected(self, rp: ResourcePath, headers: Mapping[str, str]) -> Expected:
        """What the channel publishes for this file: the shard's own name, the record in the
        cached repodata snapshot, or rattler's X-Expected-Sha256."""
        if rp.kind is Kind.SHARD:
            return Expected(sha256=rp.filename[:64])
        claimed = headers.get("x-expected-sha256")
        if claimed is not None and not SHA256_RE.match(claimed.strip()):
            raise BadRequest("X-Expected-Sha256 must be 64 hex digits")
        record = await self._published_record(rp)
        if record is not None:
            size = record.get("size")
            return Expected(
                sha256=record.get("sha256") or (claimed.strip().lower() if claimed else None),
                md5=record.get("md5"),
                size=size if isinstance(size, int) else None,
            )
        return Expected(sha256=claimed.strip().lower() if claimed else None)

    async def _published_record(self, rp: ResourcePath) -> dict[str, Any] | None:
        entry = self.index.get_meta("repodata:" + rp.subdir_key)
        if entry is None or "json" not in entry.variants:
            return None
        path = self.meta.variant_path("repodata:" + rp.subdir_key, entry.variants["json"])
        return await asyncio.to_thread(_lookup_record, str(path), rp.filename)

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


def _lookup_record(path: str, filename: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return find_record(buf, filename)
    except (FileNotFoundError, ValueError):
        return None
