"""Upstream metadata as clients see it: a subdir's repodata snapshot and every variant of it,
its CEP-16 shard index, and other revalidated files (channeldata.json, run_exports.json ...),
each answered as a `Stored` result with its own strong ETag and what is left of the ttl."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import structlog

from ..rules.conditional import remaining_max_age, strong_etag
from ..rules.encoding import choose
from ..rules.errors import NotFound, UpstreamError
from ..rules.routing import REPODATA_VARIANTS as REPODATA_FILES
from ..rules.routing import ResourcePath
from ..settings import ChannelSettings
from ..storage.index import MetaEntry
from ..storage.keys import MetaKey
from .builds import REPODATA_VARIANTS, build_metadata_file, build_repodata, build_shard_index
from .derived import Derived
from .following import TapReader
from .metadata import MetadataCache, Served
from .results import STALE_WARNING, Asked, Stored, Streamed
from .transfer import Head
from .upstream import UpstreamClient, join_url

log = structlog.get_logger("condaproxy.cache.views")

SHARD_TYPE = "application/octet-stream"


class Views:
    def __init__(
        self,
        meta: MetadataCache,
        upstream: UpstreamClient,
        url: Callable[[ChannelSettings, ResourcePath], str],
        derived: Derived,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.derived = derived
        self.meta = meta
        self.upstream = upstream
        self.url = url  # where a resource really is upstream (packages.Packages.url)
        self.clock = clock

    # fetched or revalidated as the ttl requires

    def _repodata_urls(self, rp: ResourcePath, channel: ChannelSettings) -> list[str]:
        base = join_url(self.upstream.url_for(channel, rp.prefix), rp.subdir or "")
        return [join_url(base, "repodata.json.zst"), join_url(base, "repodata.json")]

    async def repodata(self, rp: ResourcePath, channel: ChannelSettings) -> Served:
        urls = self._repodata_urls(rp, channel)
        return await self.meta.get(MetaKey.repodata(rp.subdir_key), channel, urls, build_repodata)

    async def shard_index(self, rp: ResourcePath, channel: ChannelSettings) -> Served:
        key = MetaKey.shard_index(rp.subdir_key)
        try:
            return await self.meta.get(key, channel, [self.url(channel, rp)], build_shard_index)
        except UpstreamError as exc:
            # CEP-16 clients fall back to repodata.json on 404, but rattler aborts the whole
            # solve on a 5xx: with nothing cached, "no shards" is the answer that works.
            log.warning("shard index unavailable, answering 404", reason=exc.message)
            raise NotFound(f"shard index unavailable: {exc.message}") from None

    # answered

    async def repodata_result(
        self, rp: ResourcePath, channel: ChannelSettings, asked: Asked
    ) -> Stored | Streamed:
        if rp.filename.startswith("current_repodata.json"):
            current = await self._current(rp, channel, asked)
            if current is not None:
                return current
        key = MetaKey.repodata(rp.subdir_key)
        if rp.filename == "repodata.json.zst" and asked.method == "GET":
            urls = self._repodata_urls(rp, channel)
            got = await self.meta.follow(key, channel, urls, build_repodata, "zst")
            if isinstance(got, TapReader):
                return self._followed(got)
            return await self.variant_result(key, got, rp.filename, asked)
        served = await self.repodata(rp, channel)
        return await self.variant_result(key, served, rp.filename, asked)

    async def with_json(self, key: MetaKey, entry: MetaEntry) -> MetaEntry:
        """`entry` with its JSON variant on disk (made from the .zst if need be), for readers
        that need the document itself: merges, record lookups, listings, prefetch."""
        return await self.derived.materialise(key, entry, "json")

    def _followed(self, reader: TapReader) -> Streamed:
        """The upstream's new .zst as it arrives (following.py): no ETag (the digest is known
        only at the end), fresh for the ttl like any refreshed snapshot."""
        size = reader.tap.started.result()
        head = Head(size=size, content_type="application/zstd", sha256=None)
        max_age = int(self.meta.ttl)
        return Streamed(head, reader, "miss", cache_control=f"public, max-age={max_age}")

    async def _current(
        self, rp: ResourcePath, channel: ChannelSettings, asked: Asked
    ) -> Stored | None:
        """The upstream's own current_repodata.json (a fraction of the full document), kept
        and revalidated like repodata; None if the upstream has none or cannot give one now
        (the full snapshot is a valid superset)."""
        key = MetaKey.current(rp.subdir_key)
        base = join_url(self.upstream.url_for(channel, rp.prefix), rp.subdir or "")
        try:
            served = await self.meta.get(
                key, channel, [join_url(base, "current_repodata.json")], build_repodata
            )
        except NotFound:
            return None
        except UpstreamError as exc:
            # Nothing usable cached and the upstream's copy failed: conda's classic solver
            # aborts on a 5xx here, and the full snapshot answers its question as well.
            log.warning(
                "current_repodata unavailable, serving the full snapshot", reason=exc.message
            )
            return None
        if rp.filename.endswith(".json"):
            return await self._negotiated(key, served, "json", asked)
        return self.result(key, served, "zst", "application/zstd")

    async def shard_index_result(self, rp: ResourcePath, channel: ChannelSettings) -> Stored:
        key = MetaKey.shard_index(rp.subdir_key)
        return self.result(key, await self.shard_index(rp, channel), "body", SHARD_TYPE)

    async def file_result(self, rp: ResourcePath, channel: ChannelSettings) -> Stored:
        key = MetaKey.file(rp.key)
        served = await self.meta.get(key, channel, [self.url(channel, rp)], build_metadata_file)
        ctype = "application/json" if rp.filename.endswith(".json") else SHARD_TYPE
        return self.result(key, served, "body", ctype)

    async def variant_result(
        self,
        key: MetaKey,
        served: Served,
        filename: str,
        asked: Asked,
        fetched_at: float | None = None,
    ) -> Stored:
        """The variant `filename` names of a snapshot (upstream or merged). A derived one
        (.bz2) not made yet is made now for a small snapshot, else in the background, with a
        404 meanwhile (derived.py). `fetched_at` overrides the entry's, for the freshness
        shown."""
        name = REPODATA_FILES[filename]
        blob_variant, ctype = REPODATA_VARIANTS[name]
        entry = served.entry
        self.derived.after_change(key, entry)
        if blob_variant != "json" and blob_variant not in entry.variants:
            head = asked.method == "HEAD"
            ready = await self.derived.ensure(key, entry, blob_variant, asked=True, head=head)
            if ready is None:
                raise NotFound(
                    f"{filename} is being made from the current snapshot; "
                    "repodata.json.zst and repodata.json are ready"
                )
            entry = ready
        if fetched_at is not None:
            entry = dataclasses.replace(entry, fetched_at=fetched_at)
        if blob_variant == "json":
            return await self._negotiated(key, Served(entry, served.outcome), name, asked)
        return self.result(key, Served(entry, served.outcome), name, ctype, blob_variant)

    async def _negotiated(self, key: MetaKey, served: Served, name: str, asked: Asked) -> Stored:
        """The JSON document in the coding the client accepts best (rules/encoding.py): the
        .zst bytes as `zstd`, the gzip variant (made once per snapshot: now if small, else in
        the background, identity meanwhile), or identity. Each coding its own ETag."""
        entry = served.entry
        offered = {"zstd"} if "zst" in entry.variants else set()
        wants = choose(asked.headers.get("accept-encoding"), offered | {"gzip"})
        if wants == "gzip" and "gzip" not in entry.variants:
            head = asked.method == "HEAD"
            entry = await self.derived.ensure(key, entry, "gzip", asked=True, head=head) or entry
        offered |= {"gzip"} if "gzip" in entry.variants else set()
        coding = choose(asked.headers.get("accept-encoding"), offered)
        blob = {"zstd": "zst", "gzip": "gzip", None: "json"}[coding]
        if blob not in entry.variants:  # the JSON itself, decompressed once per snapshot
            entry = await self.derived.materialise(key, entry, blob)
        result = self.result(key, Served(entry, served.outcome), name, "application/json", blob)
        result.headers["vary"] = "Accept-Encoding"
        if coding is not None:
            result.headers["content-encoding"] = coding
            result.etag = strong_etag(f"{entry.digest[:40]}-{name}-{coding}")
        return result

    def result(
        self,
        key: MetaKey,
        served: Served,
        name: str,
        ctype: str,
        blob_variant: str | None = None,
    ) -> Stored:
        entry = served.entry
        variant = entry.variants[blob_variant or name]
        stale = served.outcome == "stale"
        ttl = self.meta.ttl
        max_age = 0 if stale else remaining_max_age(entry.fetched_at, ttl, self.clock())
        return Stored(
            size=variant.size,
            content_type=ctype,
            # One strong ETag per URL: the snapshot's digest plus the variant name.
            etag=strong_etag(f"{entry.digest[:40]}-{name}"),
            modified=entry.changed_at,
            cache_control=f"public, max-age={max_age}",
            outcome=served.outcome,
            headers={"warning": STALE_WARNING} if stale else {},
            opener=lambda: self.meta.open_variant(key, variant),
        )
