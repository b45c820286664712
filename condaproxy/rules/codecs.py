"""The codecs of conda metadata, in one place: zstd and msgpack, and the HTTP content codings
an upstream may put on a body. No I/O beyond reading the stream a caller hands over.

Decompression never produces more than its limit: a 32 KB zstd frame, or a 1 MB gzip body, can
claim gigabytes. Streaming decoders hand out at most `PIECE` bytes at a time.
"""

from __future__ import annotations

import io
import mmap
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

import msgpack
import msgspec
import zstandard

THREADED_ZSTD = 8 << 20  # bytes from which zstd_compress uses a thread per core
ZSTD_LEVEL = 1  # the proxy compresses often (merges): speed first; upstream .zst passes through
SHARD_LIMIT = 64 << 20  # one package name's shard: a few MiB at most in real channels
# Under the mmap threshold of cache/heap.py: pieces reuse the heap; 4 MiB ones were each mapped and
# faulted in afresh, +25% on decompressing a 280 MB snapshot while it downloads.
PIECE = 1 << 20
# Items in one msgpack document from upstream (a conda-forge shard index: ~30,000; the shard of
# a name with 5,000 records: ~250,000), and in any one array or map of it.
MSGPACK_ITEMS = 2_000_000
MSGPACK_CONTAINER = 1_000_000
UNCOUNTED = 1 << 20  # at most ~72 MiB of objects, whatever the bytes


class TooLarge(ValueError):
    """A decompressed document would pass its size limit."""


def decode_json(data: Any, kind: Any = Any) -> Any:
    """msgspec.json.decode of a document from upstream (or derived from one), as `kind`. Arrays
    nested a thousand deep are a few KB of JSON, and msgspec (skipping a msgspec.Raw value
    too) descends them on the C stack, guarded by Python's recursion limit: the RecursionError
    it raises is an answer of 500 wherever a malformed document is a 502 or a stale copy. So
    such a document is malformed here, a DecodeError (a ValueError) like any other."""
    try:
        return msgspec.json.decode(data, type=kind)
    except RecursionError:
        raise msgspec.DecodeError("JSON is malformed: nested deeper than it can be read") from None


def content_codings(header: str | None) -> list[str]:
    """The codings a Content-Encoding header lists, in the order they were applied (RFC 9110
    §8.4: a comma-separated list, case-insensitive), without `identity` (no coding) and empty
    members: `identity, gzip` is gzip, an empty header none, `gzip, gzip` gzip twice."""
    codings = (c.strip().lower() for c in (header or "").split(","))
    return [c for c in codings if c and c != "identity"]


def zstd_decompress(data: bytes, limit: int = SHARD_LIMIT) -> bytes:
    """Decode a zstd document held in memory, refusing to produce more than `limit` bytes."""
    return b"".join(decode_content(io.BytesIO(data), "zstd", limit))


class Readable(Protocol):
    """A file, or anything that reads like one (a body still being written, cache/inflating)."""

    def read(self, n: int = -1, /) -> bytes: ...


def decode_content(source: Readable, coding: str, limit: int) -> Iterator[bytes]:
    """The body read from `source` with one content coding undone (RFC 9110 §8.4.1), piece by
    piece, never more than `limit` bytes in all. Raises TooLarge past the limit and ValueError
    for a coding it does not know or bytes that do not decode."""
    if coding in ("gzip", "x-gzip"):  # RFC 9110 §8.4.1.3
        pieces = _inflate(source, zlib.MAX_WBITS | 16)
    elif coding == "deflate":  # §8.4.1.2 says zlib format; some servers send raw deflate
        pieces = _inflate(source, None)
    elif coding == "zstd":  # RFC 8878
        pieces = _unzstd(source)
    elif coding == "identity":
        pieces = iter(lambda: source.read(PIECE), b"")
    else:
        raise ValueError(f"content coding {coding!r} is not supported")
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > limit:
            raise TooLarge(f"decompresses to more than {limit} bytes")
        yield piece


def _inflate(source: Readable, wbits: int | None) -> Iterator[bytes]:
    data = source.read(PIECE)
    if wbits is None:  # a zlib header (RFC 1950 §2.2), or raw deflate
        zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        while data and not inflater.eof:
            piece = inflater.decompress(data, PIECE)  # bounded: the rest stays unconsumed
            data = inflater.unconsumed_tail or source.read(PIECE)
            if piece:
                yield piece
        if not inflater.eof:
            raise ValueError("compressed data ends before its end marker")
        yield inflater.flush()
    except zlib.error as exc:
        raise ValueError(f"not valid compressed data: {exc}") from None


class Inflater:
    """Undo gzip or deflate on a body that arrives in pieces, never more than `limit` bytes in
    all (a package an upstream compressed although it was asked for `identity`). Raises
    TooLarge past the limit and ValueError for a coding it cannot undo piece by piece or bytes
    that do not decode."""

    CODINGS = ("gzip", "x-gzip", "deflate")

    def __init__(self, coding: str, limit: int) -> None:
        if coding not in self.CODINGS:
            raise ValueError(f"content coding {coding!r} is not supported on a package")
        self.limit, self.total = limit, 0
        self._wbits: int | None = zlib.MAX_WBITS | 16 if coding != "deflate" else None
        self._inflater: Any = None
        self._head = b""  # deflate's first bytes, until they say which format it is

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            if self._wbits is None:  # deflate: a zlib header (RFC 1950 §2.2), or raw deflate
                data = self._head = self._head + data
                if len(data) < 2:
                    return
                zlib_header = len(data) >= 2 and data[0] & 0x0F == 8
                zlib_header = zlib_header and (data[0] << 8 | data[1]) % 31 == 0
                self._wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
            self._inflater = zlib.decompressobj(self._wbits)
        try:
            # Bytes after the end marker are not the package's: the checksum decides.
            while data and not self._inflater.eof:
                piece = self._inflater.decompress(data, PIECE)  # bounded: the rest stays
                data = self._inflater.unconsumed_tail
                self.total += len(piece)
                if self.total > self.limit:
                    raise TooLarge(f"decompresses to more than {self.limit} bytes")
                if piece:
                    yield piece
        except zlib.error as exc:
            raise ValueError(f"not valid compressed data: {exc}") from None

    def end(self) -> None:
        if self._inflater is None or not self._inflater.eof:
            raise ValueError("compressed data ends before its end marker")


def _unzstd(source: Readable) -> Iterator[bytes]:
    # Upstream frames may omit their content size (rattler's do), and may be several. A frame
    # cut short yields what it holds: the document checks that follow refuse what is left.
    reader = zstandard.ZstdDecompressor().stream_reader(
        source,  # type: ignore[arg-type]  # stream_reader needs only read()
        read_across_frames=True,
    )
    try:
        while piece := reader.read(PIECE):
            yield piece
    except zstandard.ZstdError as exc:
        raise ValueError(f"not valid zstd: {exc}") from None


def zstd_compress(data: bytes | mmap.mmap, level: int = ZSTD_LEVEL) -> bytes:
    # Worker threads pay off on big documents only: a 1 MB shard index compresses in half
    # the time without them.
    threads = -1 if len(data) >= THREADED_ZSTD else 0
    with memoryview(data) as view:  # released here: `data` may be an mmap its owner closes
        return zstandard.ZstdCompressor(level=level, threads=threads).compress(view)


def decode_msgpack(data: bytes, budget: int = MSGPACK_ITEMS) -> Any:
    """A msgpack document from upstream, decoded under a budget of `budget` items (the
    elements of every array and the pairs of every map, nested ones counted as items too).
    The size limit alone does not bound memory: each 1-byte empty array becomes a 64-byte
    list, so 4 MiB of them took 290 MiB. Raises TooLarge past the budget. Documents under
    UNCOUNTED bytes (nearly every shard) cannot get far and skip the count's cost."""
    if len(data) <= UNCOUNTED:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    seen = 0

    def count(container: Any) -> Any:
        nonlocal seen
        seen += 1 + len(container)
        if seen > budget:
            raise TooLarge(f"msgpack document holds more than {budget} items")
        return container

    per_container = min(budget, MSGPACK_CONTAINER)
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        list_hook=count,
        object_hook=count,
        max_array_len=per_container,
        max_map_len=per_container,
    )


def encode_msgpack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)
