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
import os
from pathlib import Path

import zstandard

from .errors import UpstreamError
from .metadata import Built, file_sha256, write_variant
from .rewrite import (
    Origins,
    decode_msgpack,
    encode_msgpack,
    rewrite_repodata,
    rewrite_shard_index,
)

ZSTD_LEVEL = 1  # the proxy compresses often (merges): speed first; upstream .zst passes through

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


_NEEDLE = b'"base_url"'


def _stream_unchanged_zst(body_path: str, url: str, tmp_dir: str) -> Built | None:
    """The common case: a .zst body whose document needs no rewrite. Decompress it straight
    into the json variant file (no 200 MB buffer), watching for `"base_url"` on the way;
    None if it is there (the caller then rewrites in memory)."""
    path = os.path.join(tmp_dir, f"{os.getpid()}-{os.urandom(6).hex()}.json.partial")
    tail = b""
    first = b""
    with open(body_path, "rb") as src, open(path, "wb") as out:
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        while chunk := reader.read(4 << 20):
            if not first:
                first = chunk.lstrip()[:1]
            if _NEEDLE in tail + chunk[: len(_NEEDLE)] or _NEEDLE in chunk:
                out.close()
                os.unlink(path)
                return None
            tail = chunk[-len(_NEEDLE) :]
            out.write(chunk)
        size = out.tell()
    if first != b"{":
        os.unlink(path)
        raise UpstreamError(url, "repodata is not a JSON object")
    digest = file_sha256(body_path)
    files = {
        "zst": (body_path, digest, os.path.getsize(body_path)),
        "json": (path, f"{digest}-json", size),
    }
    return Built(digest, files, Origins())


def build_repodata(body_path: str, url: str, tmp_dir: str) -> Built:
    if url.endswith(".zst"):
        try:
            streamed = _stream_unchanged_zst(body_path, url, tmp_dir)
        except zstandard.ZstdError as exc:
            raise UpstreamError(url, f"unusable repodata: {exc}") from None
        if streamed is not None:
            return streamed
    body = Path(body_path).read_bytes()
    try:
        document = zstd_decompress(body) if url.endswith(".zst") else body
        rewritten, origins = rewrite_repodata(document, url)
    except (zstandard.ZstdError, ValueError) as exc:
        raise UpstreamError(url, f"unusable repodata: {exc}") from None
    if rewritten[:1] != b"{" and rewritten.lstrip()[:1] != b"{":
        raise UpstreamError(url, "repodata is not a JSON object")
    if url.endswith(".zst") and rewritten is document:
        # The upstream's own compressed bytes describe the same document: adopt that file,
        # and let its (40 MB, not 200 MB) hash name the snapshot.
        digest = hashlib.sha256(body).hexdigest()
        files = {"zst": (body_path, digest, len(body))}
    else:
        zst = zstd_compress(rewritten)
        digest = hashlib.sha256(zst).hexdigest()
        files = {"zst": write_variant(tmp_dir, "zst", zst, digest)}
    files["json"] = write_variant(tmp_dir, "json", rewritten, f"{digest}-json")
    return Built(digest, files, origins)


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
