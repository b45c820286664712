"""What the proxy makes of upstream repodata and shard indexes: one snapshot, every variant.

All variants a client may read for a subdir (repodata.json, .zst, .bz2, current_repodata.json)
derive from the one upstream body fetched last, so they always describe the same snapshot.
"""

from __future__ import annotations

import bz2
import hashlib
import io

import zstandard

from .errors import UpstreamError
from .metadata import Built
from .rewrite import decode_msgpack, encode_msgpack, rewrite_repodata, rewrite_shard_index

ZSTD_LEVEL = 6  # good ratio at hundreds of MB/s; conda-forge's own files use a higher level

# variant name -> (blob variant it is served from, content type)
REPODATA_VARIANTS = {
    "json": ("json", "application/json"),
    # current_repodata.json is a subset upstream; the full snapshot is a valid superset for
    # conda's classic solver and keeps every variant consistent.
    "current": ("json", "application/json"),
    "zst": ("zst", "application/zstd"),
    "bz2": ("bz2", "application/x-bzip2"),
}


def zstd_decompress(data: bytes) -> bytes:
    # Upstream frames may omit the content size (rattler's do), so stream-decode.
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


def zstd_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).compress(data)


def build_repodata(body: bytes, url: str) -> Built:
    try:
        document = zstd_decompress(body) if url.endswith(".zst") else body
        rewritten, origins = rewrite_repodata(document, url)
    except (zstandard.ZstdError, ValueError) as exc:
        raise UpstreamError(url, f"unusable repodata: {exc}") from None
    if not rewritten.lstrip()[:1] == b"{":
        raise UpstreamError(url, "repodata is not a JSON object")
    # Reuse the upstream's compressed bytes when the document passes through unchanged.
    zst = body if url.endswith(".zst") and rewritten is document else zstd_compress(rewritten)
    return Built(hashlib.sha256(rewritten).hexdigest(), {"json": rewritten, "zst": zst}, origins)


def build_bz2(document: bytes) -> bytes:
    return bz2.compress(document, 9)


def build_shard_index(body: bytes, url: str) -> Built:
    try:
        index = decode_msgpack(zstd_decompress(body))
        if not isinstance(index, dict) or not isinstance(index.get("shards"), dict):
            raise ValueError("no 'shards' map")
        rewritten, origins = rewrite_shard_index(index, url)
    except (zstandard.ZstdError, ValueError, TypeError) as exc:
        raise UpstreamError(url, f"unusable shard index: {exc}") from None
    data = zstd_compress(encode_msgpack(rewritten))
    return Built(hashlib.sha256(data).hexdigest(), {"body": data}, origins)
