"""What the channel publishes for a file, so a download can be verified against it: a shard's
own name, the file's record in the cached repodata snapshot, or rattler's X-Expected-Sha256."""

from __future__ import annotations

import asyncio
import mmap
import re
from collections.abc import Mapping
from typing import Any

from .downloads import Expected
from .errors import BadRequest
from .index import Index
from .metadata import MetadataCache
from .records import find_record
from .routing import Kind, ResourcePath

SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


async def expected_for(
    rp: ResourcePath, headers: Mapping[str, str], index: Index, meta: MetadataCache
) -> Expected:
    if rp.kind is Kind.SHARD:
        return Expected(sha256=rp.filename[:64])  # CEP-16: a shard is named by its sha256
    claimed = headers.get("x-expected-sha256")
    if claimed is not None and not SHA256_RE.match(claimed.strip()):
        raise BadRequest("X-Expected-Sha256 must be 64 hex digits")
    claimed_sha = claimed.strip().lower() if claimed else None
    record = await published_record(rp, index, meta)
    if record is None:
        return Expected(sha256=claimed_sha)
    size = record.get("size")
    return Expected(
        sha256=record.get("sha256") or claimed_sha,
        md5=record.get("md5"),
        size=size if isinstance(size, int) else None,
    )


async def published_record(
    rp: ResourcePath, index: Index, meta: MetadataCache
) -> dict[str, Any] | None:
    key = "repodata:" + rp.subdir_key
    entry = index.get_meta(key)
    if entry is None or "json" not in entry.variants:
        return None
    path = meta.variant_path(key, entry.variants["json"])
    return await asyncio.to_thread(_lookup_record, str(path), rp.filename)


def _lookup_record(path: str, filename: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return find_record(buf, filename)
    except (FileNotFoundError, ValueError):
        return None
