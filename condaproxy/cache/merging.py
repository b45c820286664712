"""Building merged metadata for channels with uploads: repodata and the shard index with upstream
records plus local ones, recomputed when either side changes.

A merged result is keyed by where it came from (the upstream snapshot's digest and the uploads
generation): while neither moves, the stored result is served as is; when one does, it is
rebuilt once (single flight across workers) and gets new ETags. Large documents are merged in a
separate process, so the event loop never waits on a second of JSON work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import mmap
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Any, cast

import structlog
import zstandard

from ..rules.codecs import (
    ZSTD_LEVEL,
    decode_msgpack,
    encode_msgpack,
    zstd_compress,
    zstd_decompress,
)
from ..rules.merge import (
    MergedDocument,
    Record,
    merged_repodata,
    merged_shard_index,
    shard_bytes,
    shard_records,
)
from ..storage.blobs import BlobStore
from ..storage.index import FileEntry, Index, MetaEntry
from ..storage.keys import MetaKey
from .fail_closed import built_or_503
from .metadata import MetadataCache
from .variants import Built, temp_path, write_variant
from .workers import BIG, Workers

log = structlog.get_logger("condaproxy.cache.overlay")

MERGE_FORMAT = "4"  # bump when merge rules change: the digest names the output
# 3: names compare case-insensitively, and by the record's `name` field too (shadowing.py)
# 4: a name uploaded in any subdir of the channel hides upstream records in every subdir


def merge_digest(source: str, subdir: str, allow_upstream: list[str]) -> str:
    """A merged document is a function of its inputs, so their hash names it (and its ETags)
    without hashing 200 MB of output."""
    inputs = f"{MERGE_FORMAT}|{source}|{subdir}|{','.join(sorted(allow_upstream))}"
    return hashlib.sha256(inputs.encode()).hexdigest()


def _versioned(source: str) -> str:
    """A merged entry's source, with the rules it was made by: a stored entry made by older
    rules is rebuilt, not served (it may show records the rules now hide)."""
    return f"{source}|merge {MERGE_FORMAT}"


def merge_job(
    upstream_path: str | None,
    local: dict[str, Record],
    subdir: str,
    allow_upstream: list[str],
    tmp_dir: str,
    digest: str,
    shadow: list[str] | None = None,
) -> Built:
    """Merge, streaming the json and zst variants into temp files. Runs in the worker process
    for big documents. The upstream file is mapped: its pages are file-backed (the kernel can
    drop and re-read them) and the merged document is written piece by piece, most pieces views
    of that mapping, so anonymous memory stays small whatever the document's size."""
    names = None if shadow is None else set(shadow)
    if not upstream_path:
        merged = merged_repodata(None, local, subdir, allow_upstream, names)
        return write_merged(merged, tmp_dir, digest)
    with open(upstream_path, "rb") as f:
        upstream = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    upstream.madvise(mmap.MADV_SEQUENTIAL)
    merged = merged_repodata(upstream, local, subdir, allow_upstream, names)
    try:
        return write_merged(merged, tmp_dir, digest)
    finally:
        del merged
        # On an error the traceback may still hold a view; the mapping then goes with it.
        with contextlib.suppress(BufferError):
            upstream.close()


def write_merged(merged: MergedDocument, tmp_dir: str, digest: str) -> Built:
    """The json and zst variants of `merged`, written as its pieces come: a thread writes each
    piece to the json file while this one feeds it to zstd's threads (all release the GIL; the
    machine has 2 cores), so a piece is made once and at most two are alive. The zstd frame
    declares the content size, and zstd checks that exactly that many bytes came. Nothing is
    left behind when a step fails."""
    paths = {name: temp_path(tmp_dir, name) for name in ("json", "zst")}
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    json_sha = hashlib.sha256()  # the files are named after their inputs: their contents'
    try:  # hashes are what a copy from before a restart is checked against (at_rest.py)
        with (
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
            open(paths["json"], "wb") as out,
            open(paths["zst"], "wb") as zst_file,
        ):
            zst_out = _Hashing(zst_file)
            sink = cast(IO[bytes], zst_out)

            def put(piece: Any) -> None:
                json_sha.update(piece)
                out.write(piece)

            # Not a `with`: after a failure, ending the frame would only add a size error.
            zst = compressor.stream_writer(sink, size=merged.size, closefd=False)
            written: concurrent.futures.Future[None] | None = None
            for piece in merged.pieces():
                if written is not None:
                    written.result()
                written = pool.submit(put, piece)
                zst.write(piece)
            if written is not None:
                written.result()
            zst.close()  # ends the frame; zstd checks the planned size
            size = out.tell()
        if size != merged.size:
            raise RuntimeError(f"merged repodata: planned {merged.size} bytes, wrote {size}")
    except BaseException:
        for path in paths.values():
            Path(path).unlink(missing_ok=True)
        raise
    files = {
        name: (path, f"{digest}-{name}", os.path.getsize(path)) for name, path in paths.items()
    }
    contents = {"json": json_sha.hexdigest(), "zst": zst_out.sha256.hexdigest()}
    return Built(digest, files, contents=contents)


class _Hashing:
    """A binary file whose writes are hashed as they go (zstd's output, as it is written)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return int(self.f.write(data))

    def flush(self) -> None:
        self.f.flush()


class Merger:
    def __init__(
        self, meta: MetadataCache, index: Index, store: BlobStore, tmp_dir: Path, workers: Workers
    ) -> None:
        self.meta = meta
        self.index = index
        self.store = store
        self.tmp_dir = tmp_dir
        self.workers = workers

    async def repodata(
        self,
        key: MetaKey,
        source: str,
        upstream_path: Path | None,
        local: Mapping[str, Record],
        subdir: str,
        allow_upstream: tuple[str, ...],
        shadow: set[str],
    ) -> MetaEntry:
        """The merged repodata entry for `source` (upstream digest + uploads generation +
        the channel's shadowed names, see overlay.py)."""
        source = _versioned(source)

        async def build() -> MetaEntry:
            big = upstream_path is not None and upstream_path.stat().st_size > BIG
            built = await self.workers.run(
                big,
                merge_job,
                str(upstream_path) if upstream_path else None,
                dict(local),
                subdir,
                list(allow_upstream),
                str(self.tmp_dir),
                merge_digest(source, subdir, list(allow_upstream)),
                sorted(shadow),
            )
            return await asyncio.to_thread(self.meta.put_derived, key, source, built)

        return await self._derived(key, source, build)

    async def _derived(
        self, key: MetaKey, source: str, build: Callable[[], Awaitable[MetaEntry]]
    ) -> MetaEntry:
        """The entry derived from `source`: reused while the source is unchanged, otherwise
        built once (single flight across workers)."""
        entry = await self.meta.intact(key, self.index.get_meta(key))
        if entry is not None and entry.source_url == source:
            return entry
        async with self.meta.locks.hold(key.lock):
            entry = await self.meta.intact(key, self.index.get_meta(key))
            if entry is not None and entry.source_url == source:
                return entry
            return await built_or_503("merged view", key, build)

    async def shard_index(
        self,
        key: MetaKey,
        source: str,
        channel_key: str,
        upstream_index: bytes | None,
        local: Mapping[str, Record],
        subdir: str,
        upstream_shards: Mapping[str, dict[str, Record]],
        shadow: set[str],
    ) -> MetaEntry:
        """The merged CEP-16 index: one new shard per local name, lowercased (local records,
        plus the upstream's for names in `allow_upstream`, passed in as `upstream_shards` by
        lowercased name); no upstream shard of a name in `shadow`."""
        source = _versioned(source)
        return await self._derived(
            key,
            source,
            lambda: asyncio.to_thread(
                self._build_shards,
                key,
                source,
                channel_key,
                upstream_index,
                local,
                subdir,
                upstream_shards,
                shadow,
            ),
        )

    def _build_shards(
        self,
        key: MetaKey,
        source: str,
        channel_key: str,
        upstream_index: bytes | None,
        local: Mapping[str, Record],
        subdir: str,
        upstream_shards: Mapping[str, dict[str, Record]],
        shadow: set[str],
    ) -> MetaEntry:
        # One shard per normalised name (clients fold case: rattler asks for the lowercased
        # name), which replaces the upstream shard of that name in every case.
        by_name: dict[str, dict[str, Record]] = {}
        for filename, record in local.items():
            by_name.setdefault(str(record["name"]).lower(), {})[filename] = record
        shards = {}
        for name, records in by_name.items():
            data = shard_bytes({**upstream_shards.get(name, {}), **records})
            sha = hashlib.sha256(data).hexdigest()
            if not self.store.exists(sha):
                self.store.put_bytes(data, sha)
            # Served like any cached shard: content-addressed, immutable.
            self.index.put_file(
                f"{channel_key}/shards/{sha}.msgpack.zst",
                FileEntry(sha, len(data), self.meta.clock(), local=True),
            )
            shards[name] = data
        base: dict[str, Any] | None = (
            decode_msgpack(zstd_decompress(upstream_index)) if upstream_index else None
        )
        merged = merged_shard_index(base, shards, subdir, shadow)
        variant = write_variant(str(self.tmp_dir), "body", zstd_compress(encode_msgpack(merged)))
        return self.meta.put_derived(key, source, Built(variant[1], {"body": variant}))


def decode_shard(data: bytes) -> dict[str, Record]:
    return shard_records(decode_msgpack(zstd_decompress(data)))
