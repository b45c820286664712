"""The two binary codecs of conda metadata, in one place: zstd (bounded) and msgpack. No I/O
beyond reading a file header.

Decompression never produces more than its limit: a 32 KB zstd frame can claim gigabytes.
"""

from __future__ import annotations

import io
from typing import Any

import msgpack
import zstandard

ZSTD_LEVEL = 1  # the proxy compresses often (merges): speed first; upstream .zst passes through
SHARD_LIMIT = 64 << 20  # one package name's shard: a few MiB at most in real channels


class TooLarge(ValueError):
    """A decompressed document would pass its size limit."""


def zstd_decompress(data: bytes, limit: int = SHARD_LIMIT) -> bytes:
    """Stream-decode (upstream frames may omit the content size: rattler's do), refusing to
    produce more than `limit` bytes."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    out = reader.read(limit + 1)
    if len(out) > limit:
        raise TooLarge(f"decompresses to more than {limit} bytes")
    return out


def zstd_compress(data: bytes, level: int = ZSTD_LEVEL) -> bytes:
    return zstandard.ZstdCompressor(level=level, threads=-1).compress(data)


def decode_msgpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_msgpack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)
