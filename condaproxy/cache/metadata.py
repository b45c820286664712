"""Revalidated metadata: repodata, shard indexes, channeldata and other small JSON.

One upstream request per key at a time (single flight, across workers), conditional requests
with the upstream's validators once the copy is older than the ttl, stale-if-error when the
upstream fails, a negative cache for 404s. What a body becomes (variants, rewritten URLs) is
the caller's `build` function, which reads the body from a file and writes its variants to
files (in a worker process when the body is big); this module streams bodies to disk and
adopts the variants by atomic rename before the entry that names them is written.

Metadata files are not fsynced: they are derived and re-fetched if lost, and the rename still
means a reader sees a whole file or none. What a machine crash between write and writeback (or
anything else while the proxy was stopped) changed is caught before it is served: each file of
a copy from before the process started is hashed once (at_rest.py), and sizes on every open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..rules.codecs import content_codings
from ..rules.conditional import is_fresh, lacks_variant, usable_date, usable_etag
from ..rules.errors import (
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRefused,
)
from ..rules.loops import UpstreamLoop
from ..rules.names import hashed_name
from ..rules.numbers import header_number
from ..settings import ChannelSettings
from ..storage.blobs import BlobStore, new_temp
from ..storage.entries import NotAFile, open_regular
from ..storage.index import Index, MetaEntry, Variant
from ..storage.keys import MetaKey
from ..storage.locks import KeyedLocks
from .adopting import Fetched, adopt
from .at_rest import AtRest, unrecorded_view
from .following import Tap, TapReader
from .inflating import Inflating
from .instruments import Metrics
from .upstream import UpstreamClient, kept, kept_origins, used
from .variants import BuildFn, Built, check_zstd_file, decode_body
from .workers import Workers

log = structlog.get_logger("condaproxy.cache.metadata")

Clock = Callable[[], float]
# Bytes of a body from which its build is likely to need the worker process (workers.BIG of
# decompressed JSON is ~1 MiB of zstd): the process starts while the rest arrives.
WARM_AT = 1 << 20


@dataclass(frozen=True)
class Served:
    entry: MetaEntry
    outcome: str  # hit | miss | revalidated | stale | coalesced


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
        workers: Workers,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
        max_document: int = 768 << 20,
        passthrough: bool = False,
    ) -> None:
        self.passthrough = passthrough  # cache.refresh_passthrough: `follow` may stream
        self.metrics = metrics
        self.max_document = max_document  # bytes of a (decompressed) upstream document
        self.index = index
        self.locks = locks
        self.root = root
        self.tmp_dir = tmp_dir
        self.upstream = upstream
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.workers = workers
        self.clock = clock
        self._taps: dict[MetaKey, Tap] = {}  # refreshes being followed, in this process
        self.at_rest = AtRest(workers)  # copies from before this process are checked once
        self._followed_tasks: set[asyncio.Task[None]] = set()

    def store_for(self, key: MetaKey) -> BlobStore:
        """Each key keeps its own blobs, so replacing one key's snapshot deletes only its own."""
        name = hashed_name(str(key))
        return BlobStore(self.root / name, self.tmp_dir, anchor=self.root.parent)

    def variant_path(self, key: MetaKey, variant: Variant) -> Path:
        return self.store_for(key).path_for(variant.sha256)

    def open_variant(self, key: MetaKey, variant: Variant) -> int:
        """A descriptor on the variant. A file gone, of the wrong size or that is no file at
        all (entries.py) is dropped with its entry: a 503 (the local disk's), and the next
        request fetches the metadata again."""
        try:
            fd = open_regular(self.variant_path(key, variant))
        except (FileNotFoundError, NotADirectoryError, NotAFile):
            raise self._damaged(key, variant) from None
        if os.fstat(fd).st_size != variant.size:
            os.close(fd)
            raise self._damaged(key, variant)
        return fd

    def readable(self, key: MetaKey, variant: Variant) -> Path:
        """The path of a variant to read (in this process, a thread or a worker), once it is
        seen to be a regular file of its size: what stands there otherwise (gone, cut short,
        a directory, link or fifo put in its place while the proxy ran) is dropped with its
        entry, a 503 to retry that the next request's fresh fetch mends."""
        path = self.variant_path(key, variant)
        try:
            found = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise self._damaged(key, variant) from None
        if not stat.S_ISREG(found.st_mode) or found.st_size != variant.size:
            raise self._damaged(key, variant)
        return path

    def _damaged(self, key: MetaKey, variant: Variant) -> ServiceUnavailable:
        """Drop the entry naming `variant` (unless a new snapshot replaced it meanwhile) and
        what stands at the variant's path; the 503 to raise."""
        current = self.index.get_meta(key)
        if current is not None and variant in current.variants.values():
            log.error("cached metadata damaged on disk: dropped", key=str(key))
            self.index.forget_meta(key)
            self.at_rest.forget(variant.sha256)
            self.store_for(key).delete(variant.sha256)
        return ServiceUnavailable(
            f"{key.path}: the cached copy was damaged on disk and has been dropped; retry"
        )

    async def get(
        self, key: MetaKey, channel: ChannelSettings, urls: Sequence[str], build: BuildFn
    ) -> Served:
        """The current entry for `key`, fetched or revalidated as its age requires.

        `urls` are tried in order on a first fetch (e.g. repodata.json.zst, then .json);
        afterwards the URL that answered is the one revalidated.
        """
        return await self._get(key, channel, urls, build, None)

    async def follow(
        self,
        key: MetaKey,
        channel: ChannelSettings,
        urls: Sequence[str],
        build: BuildFn,
        variant: str,
    ) -> Served | TapReader:
        """Like `get`, except that when a refresh downloads a new `.zst` body, a reader of
        that body is returned as soon as it starts (following.py): its last byte goes out only
        if the snapshot adopted has exactly those bytes as `variant`. Clients of this process
        asking meanwhile follow the same refresh. The refresh runs to its end whether or not
        anyone still reads."""
        if not self.passthrough:
            return await self.get(key, channel, urls, build)
        entry = await self.intact(key, self._current(key, channel, urls))
        if entry is not None and is_fresh(entry.fetched_at, self.ttl, self.clock()):
            return Served(entry, "hit")
        tap = self._taps.get(key)
        joined = tap is not None
        if tap is None:
            tap = self._taps[key] = Tap(variant)
            task = asyncio.ensure_future(self._followed(key, channel, urls, build, tap))
            self._followed_tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._followed_tasks.discard)
        await asyncio.shield(tap.started)
        if tap.done.done() or tap.fd is None:
            try:
                return await asyncio.shield(tap.done)
            except UpstreamLoop:
                if not joined:
                    raise
                # Refused for the hops of the request that started the refresh (a client may
                # forge them: rules/loops.py), not this one's: refreshed with its own.
                return await self.get(key, channel, urls, build)
        return TapReader(tap, str(key))

    async def _followed(
        self, key: MetaKey, channel: ChannelSettings, urls: Sequence[str], build: BuildFn, tap: Tap
    ) -> None:
        try:
            served = await self._get(key, channel, urls, build, tap)
        except BaseException as exc:  # the followers get it; the task itself ends quietly
            tap.finish(None, exc)
        else:
            tap.finish(served, None)
        finally:
            if self._taps.get(key) is tap:
                del self._taps[key]
            tap.close()

    async def _get(
        self,
        key: MetaKey,
        channel: ChannelSettings,
        urls: Sequence[str],
        build: BuildFn,
        tap: Tap | None,
    ) -> Served:
        entry = await self.intact(key, self._current(key, channel, urls))
        if entry is not None and is_fresh(entry.fetched_at, self.ttl, self.clock()):
            return Served(entry, "hit")
        if entry is None and self.index.is_missing(key, self.clock()):
            raise NotFound(f"not found upstream (remembered for {self.negative_ttl:g}s)")
        asked_at = self.clock()
        async with self.locks.hold(key.lock):
            latest = await self.intact(key, self._current(key, channel, urls))
            if (
                latest is not None
                and latest != entry
                # Another request's refresh, answered by the upstream after this one came in
                # (so as new as a refresh of its own, even with ttl 0), or still fresh.
                and (
                    latest.fetched_at >= asked_at
                    or is_fresh(latest.fetched_at, self.ttl, self.clock())
                )
            ):
                return Served(latest, "coalesced")
            try:
                return await self._refresh(key, channel, latest, urls, build, tap)
            except UpstreamNotFound:
                self.index.remember_missing(
                    key, self.clock() + self.negative_ttl, self.negative_ttl
                )
                raise
            except UpstreamError as exc:
                if latest is None:
                    log.warning("upstream metadata unusable", key=str(key), reason=exc.message)
                    raise
                log.warning("serving stale copy", key=str(key), reason=exc.message)
                return Served(latest, "stale")
            except OSError as exc:
                # The disk cannot take the new copy (full, read-only): the old one still serves.
                reason = f"cannot store metadata: {exc.strerror or exc}"
                log.error("metadata not stored", key=str(key), reason=reason)
                if latest is None:
                    raise ServiceUnavailable(f"{key.path}: {reason}") from None
                return Served(latest, "stale")

    async def intact(self, key: MetaKey, entry: MetaEntry | None) -> MetaEntry | None:
        """`entry`, or None once it is dropped because a file it names is not what was stored
        (at_rest.py): the caller then fetches afresh, as if nothing were cached."""
        if entry is None or await self.at_rest.intact(self.store_for(key), entry):
            return entry
        if unrecorded_view(key, entry):  # not damage: a view no hash was recorded for
            log.info("cached view from an earlier version: made again", key=str(key))
        else:
            log.error("cached metadata damaged on disk: dropped, fetching it again", key=str(key))
        if self.index.get_meta(key) == entry:  # not replaced meanwhile by another worker
            self.index.forget_meta(key)
            store = self.store_for(key)
            for variant in entry.variants.values():
                store.delete(variant.sha256)
        return None

    def _current(
        self, key: MetaKey, channel: ChannelSettings, urls: Sequence[str]
    ) -> MetaEntry | None:
        """The stored entry, if it came from one of `urls`: a copy fetched from an upstream the
        channel no longer names is neither revalidated there nor served stale."""
        entry = self.index.get_meta(key)
        return entry if entry is not None and used(channel, entry.source_url) in urls else None

    async def _refresh(
        self,
        key: MetaKey,
        channel: ChannelSettings,
        entry: MetaEntry | None,
        urls: Sequence[str],
        build: BuildFn,
        tap: Tap | None = None,
    ) -> Served:
        # A copy is revalidated where it came from; that format gone or refused there, the other
        # formats are asked as on a first fetch (the copy's validators are not theirs).
        held_url = None if entry is None else (used(channel, entry.source_url) or "")
        candidates = (
            list(urls) if held_url is None else [held_url, *(u for u in urls if u != held_url)]
        )
        for i, url in enumerate(candidates):
            held = entry if url == held_url else None
            headers = {"accept-encoding": "gzip, deflate"}
            if held is not None:
                # Checked again when sent: an index may hold one kept before the rule.
                if etag := usable_etag(held.etag):
                    headers["if-none-match"] = etag
                if modified := usable_date(held.last_modified):
                    headers["if-modified-since"] = modified
            body = new_temp(self.tmp_dir)
            limit = self.max_document
            early: Inflating | None = None
            try:
                try:
                    async with self.upstream.open(
                        channel, url, headers=headers, revalidating=held is not None
                    ) as response:
                        etag = usable_etag(response.headers.get("etag"))
                        modified = usable_date(response.headers.get("last-modified"))
                        if held is not None and self.metrics is not None:
                            result = "304" if response.status == 304 else "200"
                            self.metrics.revalidations.labels(channel.name, result).inc()
                        if response.status == 304 and held is not None:
                            # RFC 9111 §4.3.4: a 304 freshens the stored response.
                            fresh = dataclasses.replace(
                                held,
                                fetched_at=self.clock(),
                                etag=etag or held.etag,
                                last_modified=modified or held.last_modified,
                            )
                            self.index.put_meta(key, fresh)
                            return Served(fresh, "revalidated")
                        if response.status == 304:
                            raise UpstreamError(response.url, "answered 304 to a plain request")
                        # The body as sent: a content coding is undone below, bounded, in a
                        # thread (a 1 MB gzip body can claim gigabytes).
                        codings = content_codings(response.headers.get("content-encoding"))
                        coding = ", ".join(codings) or "identity"
                        source = response.url
                        followed = tap if coding == "identity" and url.endswith(".zst") else None
                        if followed is not None:
                            followed.begin(
                                body.fd, header_number(response.headers.get("content-length"))
                            )
                        inflates = coding == "identity" and url.endswith(".json.zst")
                        size = 0
                        async for chunk in response.iter_bytes():
                            size += len(chunk)
                            if size > limit:
                                raise UpstreamError(
                                    response.url,
                                    f"body is larger than {limit} bytes (cache.max_repodata_size)",
                                )
                            body.write(chunk)  # a page-cache write of <= 1 MiB
                            if followed is not None:
                                followed.wrote(len(chunk))
                            if early is not None:
                                early.wrote(len(chunk))
                            elif inflates and size >= WARM_AT:
                                # A big document: decompress it as it arrives, and start the
                                # worker process its check will run in.
                                self.workers.warm()
                                early = Inflating(body.fd, response.url, str(self.tmp_dir), limit)
                                early.wrote(size)
                except UpstreamNotFound:
                    if i == len(candidates) - 1:
                        raise
                    continue
                except UpstreamRefused as exc:
                    # A format the upstream does not serve (S3's 403 for a missing key...):
                    # the next one is asked; the last one's answer is the answer.
                    if i == len(candidates) - 1 or not lacks_variant(exc.code):
                        raise
                    log.info("upstream refused a format, asking the next", reason=exc.message)
                    continue
                if early is not None:
                    early.end()
                body.close()
                path = str(body.path)
                for applied in reversed(codings):  # the last applied is undone first
                    await self.workers.run(False, decode_body, path, applied, limit, source)
                if url.endswith(".zst"):  # kept as it came: it must be whole, not just decode
                    await self.workers.run(False, check_zstd_file, path, source, limit)
                tmp = str(self.tmp_dir)
                built = await build(self.workers, str(body.path), url, tmp, limit, early)
                built = dataclasses.replace(built, origins=kept_origins(channel, built.origins))
                source = kept(channel, url) or url  # no credential in the index
                new = await self.workers.run(False, self._adopt, key, source, etag, modified, built)
            finally:
                if early is not None:
                    early.discard()  # its document, unless the build claimed it
                body.discard()  # gone already if a build adopted the body file itself
            unchanged = entry is not None and entry.digest == built.digest
            return Served(new, "revalidated" if unchanged else "miss")
        raise AssertionError("no candidate URL")  # pragma: no cover - urls is never empty

    def _adopt(
        self, key: MetaKey, source: str, etag: str | None, modified: str | None, built: Built
    ) -> MetaEntry:
        fetched = Fetched(source, etag, modified)
        return adopt(self.index, self.store_for(key), key, fetched, built, self.clock())

    def put_derived(self, key: MetaKey, source: str, built: Built) -> MetaEntry:
        """Adopt files derived from `source` rather than fetched (merged repodata, merged
        shard indexes)."""
        return self._adopt(key, source, None, None, built)
