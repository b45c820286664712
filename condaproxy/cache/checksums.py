"""What the channel publishes for a file, known before any byte of it is streamed.

A shard is named by its own sha256 (CEP-16). A package's record comes from the cached repodata
snapshot; failing that, from the package name's shard when the channel has shards (a few KiB,
where the repodata can be hundreds of MB), else from the repodata, fetched for the purpose.
A file no record lists can only be checked against the client's own X-Expected-Sha256, and is
never cached. A client whose expectation contradicts the channel's record is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import mmap
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from cachetools import LRUCache

from ..rules.codecs import decode_msgpack, zstd_decompress
from ..rules.conditional import is_fresh
from ..rules.errors import BadRequest, NotFound, ProxyError, UpstreamError
from ..rules.merge import Record
from ..rules.record_fields import SAFE_INT
from ..rules.record_lines import find_needed
from ..rules.records import find_record
from ..rules.routing import PACKAGE_RE, Kind, ResourcePath
from ..rules.shard_names import find_digest
from ..storage.index import Index, MetaEntry
from ..storage.keys import MetaKey
from .builds import take_built_map
from .derived import document_size
from .metadata import MetadataCache, Served
from .transfer import Expected
from .workers import BIG

log = structlog.get_logger("condaproxy.cache.checksums")

SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")

Fetch = Callable[[ResourcePath], Awaitable[Served]]
# Stored shard indexes from this size get a name map (rules/shard_names), made in the worker
# process: conda-forge's (~1 MB, 25,000 names) takes 6-13 ms to decode per worker, a small
# channel's well under a millisecond, less than starting that process in the middle of an
# install would cost.
NAMES_FROM = 128 << 10


UNANSWERED = object()  # a lookup the record lines could not answer: the JSON does


class ChecksumConflict(ProxyError):
    """409: the client expects other bytes than the channel publishes for this file."""

    status = 409


def client_claim(headers: Mapping[str, str]) -> str | None:
    """rattler's X-Expected-Sha256, lower-cased; a malformed one is a 400."""
    claimed = headers.get("x-expected-sha256")
    if claimed is None:
        return None
    if not SHA256_RE.match(claimed.strip()):
        raise BadRequest("X-Expected-Sha256 must be 64 hex digits")
    return claimed.strip().lower()


def expected_from_record(record: Mapping[str, Any] | None) -> Expected:
    """A record's checksums and size; a record with neither a sha256 nor an md5 verifies
    nothing, so its file is treated as unlisted."""
    if record is None:
        return Expected(listed=False)
    sha = record.get("sha256")
    md5 = record.get("md5")
    sha = sha.hex() if isinstance(sha, bytes) else sha
    md5 = md5.hex() if isinstance(md5, bytes) else md5
    sha = sha.lower() if isinstance(sha, str) and SHA256_RE.match(sha) else None
    md5 = md5.lower() if isinstance(md5, str) and MD5_RE.match(md5) else None
    # A size no file has (negative, past 2**53) verifies nothing, and sent as the answer's
    # Content-Length (a HEAD is answered from the record) it is one no client can read:
    # httpx and hyper refuse 10**30 as a protocol error. Such a record is checked by its
    # checksum alone, as one without a size.
    size = record.get("size")
    usable = isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= SAFE_INT
    size = size if usable else None
    return Expected(sha256=sha, md5=md5, size=size, listed=bool(sha or md5))


def reconcile(key: str, expected: Expected, claim: str | None) -> None:
    if claim is not None and expected.sha256 is not None and claim != expected.sha256:
        raise ChecksumConflict(
            f"the channel publishes sha256 {expected.sha256} for {key}, "
            f"not the {claim} this request expects (X-Expected-Sha256)",
            published_sha256=expected.sha256,
        )


class Checksums:
    def __init__(
        self,
        index: Index,
        meta: MetadataCache,
        repodata: Fetch,
        shard_index: Fetch,
        shard: Callable[[ResourcePath], Awaitable[dict[str, Record]]],
        with_json: Callable[[MetaKey, MetaEntry], Awaitable[MetaEntry]],
        make: Callable[[MetaKey, MetaEntry, str], None],
        materialise: Callable[[MetaKey, MetaEntry, str], Awaitable[MetaEntry]],
    ) -> None:
        self._with_json = with_json  # the entry with its JSON variant made (views.py)
        # A variant made in the background (derived.py): a shard index's sorted name map, a
        # big snapshot's record lines.
        self._make = make
        self._materialise = materialise  # the same, made now (awaited)
        self.index = index
        self.meta = meta
        self._repodata = repodata  # fetch or revalidate a subdir's upstream repodata
        self._shard_index = shard_index  # the same for its shard index; NotFound: no shards
        self._shard = shard  # the records of one shard, verified by name, decoded
        self._shard_maps: LRUCache[str, dict[str, bytes]] = LRUCache(maxsize=8)
        # Sorted maps of lines (name maps, record lines), mapped: sha256 -> (the mapped
        # file's inode, the mapping).
        self._mapped: LRUCache[str, tuple[int, mmap.mmap]] = LRUCache(maxsize=16)

    async def expected(self, rp: ResourcePath) -> Expected:
        if rp.kind is Kind.SHARD:
            return Expected(sha256=rp.filename[:64])  # CEP-16: a shard is named by its sha256
        return expected_from_record(await self.record(rp))

    async def record(self, rp: ResourcePath) -> dict[str, Any] | None:
        """The channel's record of a package file, fetched if need be; None if unlisted."""
        key = MetaKey.repodata(rp.subdir_key)
        # Checked at rest as a served copy is: a record read from a changed file is never used.
        entry = await self.meta.intact(key, self.index.get_meta(key))
        # A small document answers (made at once if need be). For a big one, the package's own
        # shard (a few KiB, found by a binary search of the index's name map) comes first:
        # reading one record out of a conda-forge-sized JSON means parsing all of it (0.18 s
        # for 280 MB, holding the GIL), and a classic client's fetch of repodata.json made
        # that JSON for every later miss to search.
        if entry is not None and document_size(entry) <= BIG:
            return await self._from_document(rp, key, entry)
        on_disk = entry is not None and "json" in entry.variants
        try:
            record = await self._from_shard(rp)
        except NotFound:
            pass  # no shards upstream: the repodata it is
        except UpstreamError:
            # A shortcut that failed (a shard 5xx, or not the shard its name says): the JSON
            # on disk answers as it did before shards came first; without it, the error.
            if not on_disk:
                raise
        else:
            if record is not None or not on_disk:
                return record
            # Not in the shards: a snapshot of the JSON on disk may list it all the same.
        if on_disk and entry is not None:
            return await self._from_document(rp, key, entry)
        try:
            await self._repodata(rp)
        except NotFound:
            return None  # no repodata for this subdir upstream: nothing lists the file
        return await self._lookup(key, rp.filename)

    async def _from_document(
        self, rp: ResourcePath, key: MetaKey, entry: MetaEntry
    ) -> dict[str, Any] | None:
        record = await self._lookup(key, rp.filename)
        if record is not None or is_fresh(entry.fetched_at, self.meta.ttl, self.meta.clock()):
            return record
        await self._repodata(rp)  # a stale snapshot may predate the file: revalidate once
        return await self._lookup(key, rp.filename)

    async def _lookup(self, key: MetaKey, filename: str) -> dict[str, Any] | None:
        entry = self.index.get_meta(key)
        if entry is None:
            return None
        if "json" not in entry.variants:
            try:
                entry = await self._with_json(key, entry)
            except OSError:
                # The disk (or the index) cannot take the JSON: a small snapshot's record is
                # read from its .zst in memory, so a full disk or a locked index fails no
                # download (a big one stays a 503).
                if document_size(entry) > BIG or "zst" not in entry.variants:
                    raise
                zst = str(self.meta.readable(key, entry.variants["zst"]))
                return await asyncio.to_thread(lookup_record_in_zst, zst, filename)
        if document_size(entry) > BIG:
            found = await self._from_lines(key, entry, filename)
            if found is not UNANSWERED:
                return found
        path = str(self.meta.readable(key, entry.variants["json"]))
        return await asyncio.to_thread(lookup_record, path, filename)

    async def _from_lines(self, key: MetaKey, entry: MetaEntry, filename: str) -> Any:
        """The record's fields from the snapshot's record lines (rules/record_lines), made
        first if need be: once across requests and workers, in the worker process, so the
        misses of a burst wait for one build instead of each parsing the JSON in the server.
        UNANSWERED where the lines cannot be made or no longer read as written."""
        if "records" not in entry.variants:
            try:
                entry = await self._materialise(key, entry, "records")
            except (OSError, ProxyError) as exc:
                log.warning("record lines not made", key=str(key), reason=f"{exc}"[:300])
                return UNANSWERED
        lines = self._lines(key, entry, "records")
        if lines is None:
            lines = await asyncio.to_thread(self._map_of, key, entry, "records")
        try:
            return find_needed(lines, filename)
        except ValueError:  # changed on disk since it was checked (at_rest.py)
            self._mapped.pop(entry.variants["records"].sha256, None)
            log.error("record lines changed on disk: the JSON answers", key=str(key))
            return UNANSWERED

    async def _from_shard(self, rp: ResourcePath) -> dict[str, Any] | None:
        served = await self._shard_index(rp)
        match = PACKAGE_RE.match(rp.filename)
        if match is None:
            return None
        digest = await self._shard_digest(served, MetaKey.shard_index(rp.subdir_key), match["name"])
        if digest is None:
            return None
        shard_rp = dataclasses.replace(rp, filename=f"{digest.hex()}.msgpack.zst", kind=Kind.SHARD)
        try:
            records = await self._shard(shard_rp)
        except (ValueError, TypeError) as exc:  # codecs raise ValueError for bad zstd
            raise UpstreamError(shard_rp.key, f"unusable shard: {exc}"[:300]) from None
        return records.get(rp.filename)

    async def shard_map(self, rp: ResourcePath) -> tuple[str, dict[str, bytes]]:
        """The upstream shard index of `rp`'s subdir as {package name: shard digest}, with the
        index's digest; NotFound when the upstream has no shards."""
        served = await self._shard_index(rp)
        key = MetaKey.shard_index(rp.subdir_key)
        return served.entry.digest, await self._shard_map(served, key)

    async def warm(self, key: MetaKey, entry: MetaEntry) -> None:
        """Make ready what record lookups in a cached shard index use, before any request
        needs it (warmup.py): the same cache entry a request would make."""
        if "names" in entry.variants:
            await asyncio.to_thread(self._map_of, key, entry, "names")
        else:
            await self._shard_map(Served(entry, "hit"), key)

    async def _shard_digest(self, served: Served, key: MetaKey, name: str) -> bytes | None:
        """The digest of `name`'s shard: searched in the index's sorted map where one was
        stored with it (rules/shard_names), else in the decoded index."""
        entry = served.entry
        if "names" not in entry.variants:  # not made yet (or an index merged with uploads)
            if entry.variants["body"].size >= NAMES_FROM:
                self._make(key, entry, "names")  # for the next worker; this one decodes meanwhile
            digest = (await self._shard_map(served, key)).get(name)
            return digest if isinstance(digest, bytes) else None
        lines = self._lines(key, entry, "names")
        if lines is None:
            lines = await asyncio.to_thread(self._map_of, key, entry, "names")
        try:
            return find_digest(lines, name)
        except ValueError:  # not the lines that were stored: changed on disk while in use
            self._mapped.pop(entry.variants["names"].sha256, None)
            raise self._damaged(key, entry) from None

    def _lines(self, key: MetaKey, entry: MetaEntry, name: str) -> mmap.mmap | None:
        """The mapping kept of the entry's sorted map of lines (variant `name`), if it maps
        the file now at its path.
        One of a file since dropped (found changed at rest: metadata.intact, just before) is
        never read: the file it maps may have been cut short, and reading past a mapped
        file's end kills the process (SIGBUS). A file of the same name fetched again is
        mapped afresh."""
        variant = entry.variants[name]
        kept = self._mapped.get(variant.sha256)
        if kept is None:
            return None
        try:
            inode = os.lstat(self.meta.variant_path(key, variant)).st_ino
        except OSError:
            inode = -1
        if inode != kept[0]:
            self._mapped.pop(variant.sha256, None)
            return None
        return kept[1]

    def _map_of(self, key: MetaKey, entry: MetaEntry, name: str) -> mmap.mmap:
        """The entry's sorted map of lines, mapped (blocking: a thread's); kept while in use."""
        variant = entry.variants[name]
        fd = self.meta.open_variant(key, variant)
        try:
            inode = os.fstat(fd).st_ino
            lines = mmap.mmap(fd, 0, prot=mmap.PROT_READ) if variant.size else mmap.mmap(-1, 1)
        finally:
            os.close(fd)
        self._mapped[variant.sha256] = (inode, lines)
        return lines

    async def _shard_map(self, served: Served, key: MetaKey) -> dict[str, bytes]:
        cache_key = f"{key}@{served.entry.digest}"
        names = self._shard_maps.get(cache_key) or take_built_map(served.entry.digest)
        if names is not None:
            self._shard_maps[cache_key] = names
        else:
            path = self.meta.readable(key, served.entry.variants["body"])

            def read() -> dict[str, bytes]:
                document = decode_msgpack(zstd_decompress(path.read_bytes()))
                shards = document.get("shards") if isinstance(document, dict) else None
                return dict(shards) if isinstance(shards, dict) else {}

            try:
                names = await asyncio.to_thread(read)
            except (ValueError, TypeError):  # checked when stored: changed on disk since
                raise self._damaged(key, served.entry) from None
            self._shard_maps[cache_key] = names
        return names

    def _damaged(self, key: MetaKey, entry: MetaEntry) -> NotFound:
        """Drop a stored shard index that no longer reads as it was stored; the caller looks
        the record up in the repodata instead (as without shards), and the next request for
        the index fetches it again."""
        if self.index.get_meta(key) == entry:
            self.index.forget_meta(key)
        return NotFound(f"{key}: the cached shard index was damaged and has been dropped")


def lookup_record_in_zst(path: str, filename: str) -> dict[str, Any] | None:
    """The record of `filename` in a stored .zst variant of at most BIG decompressed bytes,
    decompressed in memory (blocking: a thread's)."""
    with open(path, "rb") as f:
        return find_record(zstd_decompress(f.read(), BIG), filename)


def lookup_record(path: str, filename: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return find_record(buf, filename)
    except (FileNotFoundError, ValueError):
        return None
