"""Merged metadata for channels with uploads: every repodata variant and the shard index show
upstream records plus local ones, recomputed when either side changes.

A merged result is keyed by where it came from (the upstream snapshot's digest and the uploads
generation): while neither moves, the stored result is served as is; when one does, it is
rebuilt once (single flight across workers) and gets new ETags. Large documents are merged in a
separate process, so the event loop never waits on a second of JSON work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import multiprocessing
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zstandard

from .index import FileEntry, Index, MetaEntry
from .merge import Record, merge_repodata, merged_shard_index, shard_bytes, shard_records
from .metadata import MetadataCache
from .repodata import ZSTD_LEVEL, zstd_decompress
from .rewrite import decode_msgpack, encode_msgpack
from .store import BlobStore

IN_PROCESS_LIMIT = 8 << 20  # smaller upstream documents are merged in a thread


def merge_job(
    upstream_path: str | None,
    local: dict[str, Record],
    subdir: str,
    allow_upstream: list[str],
    tmp_dir: str,
) -> tuple[str, dict[str, tuple[str, str, int]]]:
    """Merge and write the json and zst variants to temp files: (digest, {variant: (path,
    sha256, size)}). Runs in a worker process for big documents."""
    upstream = Path(upstream_path).read_bytes() if upstream_path else None
    document = merge_repodata(upstream, local, subdir, allow_upstream)
    del upstream
    outputs = {
        "json": document,
        "zst": zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).compress(document),
    }
    digest = hashlib.sha256(document).hexdigest()
    files = {}
    for name, data in outputs.items():
        path = os.path.join(tmp_dir, f"merge-{os.getpid()}-{digest[:16]}.{name}.partial")
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        files[name] = (path, hashlib.sha256(data).hexdigest(), len(data))
    return digest, files


class Overlay:
    def __init__(self, meta: MetadataCache, index: Index, store: BlobStore, tmp_dir: Path) -> None:
        self.meta = meta
        self.index = index
        self.store = store
        self.tmp_dir = tmp_dir
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    async def repodata(
        self,
        key: str,
        source: str,
        upstream_path: Path | None,
        local: Mapping[str, Record],
        subdir: str,
        allow_upstream: tuple[str, ...],
    ) -> MetaEntry:
        """The merged repodata entry for `source` (upstream digest + uploads generation)."""
        entry = self.index.get_meta(key)
        if entry is not None and entry.source_url == source:
            return entry
        async with self.meta.locks.hold("meta:" + key):
            entry = self.index.get_meta(key)
            if entry is not None and entry.source_url == source:
                return entry
            args = (
                str(upstream_path) if upstream_path else None,
                dict(local),
                subdir,
                list(allow_upstream),
                str(self.tmp_dir),
            )
            big = upstream_path is not None and upstream_path.stat().st_size > IN_PROCESS_LIMIT
            if big:
                loop = asyncio.get_running_loop()
                digest, files = await loop.run_in_executor(self._executor(), merge_job, *args)
            else:
                digest, files = await asyncio.to_thread(merge_job, *args)
            return await asyncio.to_thread(self.meta.put_derived, key, source, digest, files)

    async def shard_index(
        self,
        key: str,
        source: str,
        channel_key: str,
        upstream_index: bytes | None,
        local: Mapping[str, Record],
        subdir: str,
        upstream_shards: Mapping[str, dict[str, Record]],
    ) -> MetaEntry:
        """The merged CEP-16 index: one new shard per local name (local records, plus the
        upstream's for names in `allow_upstream`, passed in as `upstream_shards`)."""
        entry = self.index.get_meta(key)
        if entry is not None and entry.source_url == source:
            return entry
        async with self.meta.locks.hold("meta:" + key):
            entry = self.index.get_meta(key)
            if entry is not None and entry.source_url == source:
                return entry
            return await asyncio.to_thread(
                self._build_shards,
                key,
                source,
                channel_key,
                upstream_index,
                local,
                subdir,
                upstream_shards,
            )

    def _build_shards(
        self,
        key: str,
        source: str,
        channel_key: str,
        upstream_index: bytes | None,
        local: Mapping[str, Record],
        subdir: str,
        upstream_shards: Mapping[str, dict[str, Record]],
    ) -> MetaEntry:
        by_name: dict[str, dict[str, Record]] = {}
        for filename, record in local.items():
            by_name.setdefault(str(record["name"]), {})[filename] = record
        shards = {}
        for name, records in by_name.items():
            data = shard_bytes({**upstream_shards.get(name, {}), **records})
            sha = hashlib.sha256(data).hexdigest()
            if not self.store.exists(sha):
                self.store.put_bytes(data, sha)
            # Served like any cached shard: content-addressed, immutable.
            self.index.put_file(
                f"{channel_key}/shards/{sha}.msgpack.zst",
                FileEntry(sha, len(data), self.meta.clock()),
            )
            shards[name] = data
        base: dict[str, Any] | None = (
            decode_msgpack(zstd_decompress(upstream_index)) if upstream_index else None
        )
        merged = merged_shard_index(base, shards, subdir)
        body = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(encode_msgpack(merged))
        digest = hashlib.sha256(body).hexdigest()
        path = self.tmp_dir / f"shards-{digest[:16]}.partial"
        path.write_bytes(body)
        return self.meta.put_derived(key, source, digest, {"body": (str(path), digest, len(body))})


def decode_shard(data: bytes) -> dict[str, Record]:
    return shard_records(decode_msgpack(zstd_decompress(data)))
