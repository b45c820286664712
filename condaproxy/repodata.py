"""What the proxy makes of upstream repodata and shard indexes: one snapshot, every variant.

All variants a client may read for a subdir (repodata.json, .zst, .bz2, current_repodata.json)
derive from the one upstream body fetched last, so they always describe the same snapshot.
Builds read the body from a file and write variant files; they are module-level functions so
that big documents can be built in a worker process.
"""

from __future__ import annotations

import bz2
import hashlib
import io
from pathlib import Path

import zstandard

from .errors import UpstreamError
from .metadata import Built, write_variant
from .rewrite import decode_msgpack, encode_msgpack, rewrite_repodata, rewrite_shard_index

ZSTD_LEVEL = 3  # ~500 MB/s on two cores; conda-forge's own files use a higher level

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


def build_repodata(body_path: str, url: str, tmp_dir: str) -> Built:
    body = Path(body_path).read_bytes()
    try:
        document = zstd_decompress(body) if url.endswith(".zst") else body
        rewritten, origins = rewrite_repodata(document, url)
    except (zstandard.ZstdError, ValueError) as exc:
        raise UpstreamError(url, f"unusable repodata: {exc}") from None
    if rewritten[:1] != b"{" and rewritten.lstrip()[:1] != b"{":
        raise UpstreamError(url, "repodata is not a JSON object")
    files = {"json": write_variant(tmp_dir, "json", rewritten)}
    if url.endswith(".zst") and rewritten is document:
        # The upstream's own compressed bytes describe the same document: adopt that file.
        files["zst"] = (body_path, hashlib.sha256(body).hexdigest(), len(body))
    else:
        files["zst"] = write_variant(tmp_dir, "zst", zstd_compress(rewritten))
    return Built(files["json"][1], files, origins)


def build_bz2(document: bytes) -> bytes:
    return bz2.compress(document, 9)


def build_shard_index(body_path: str, url: str, tmp_dir: str) -> Built:
    try:
        index = decode_msgpack(zstd_decompress(Path(body_path).read_bytes()))
        if not isinstance(index, dict) or not isinstance(index.get("shards"), dict):
            raise ValueError("no 'shards' map")
        rewritten, origins = rewrite_shard_index(index, url)
    except (zstandard.ZstdError, ValueError, TypeError) as exc:
        raise UpstreamError(url, f"unusable shard index: {exc}") from None
    variant = write_variant(tmp_dir, "body", zstd_compress(encode_msgpack(rewritten)))
    return Built(variant[1], {"body": variant}, origins)
