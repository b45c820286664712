"""Pure rule: a shard index's {package name: shard digest} map as sorted lines, searched where
it lies (an mmap) instead of decoded. No I/O.

Every worker's first cold package miss after a change of the index used to decode the whole
index (conda-forge: ~25,000 names, 6 to 13 ms and ~5 MB per worker); a binary search in this file
touches a few pages. One line per name, `name\\t<64 hex digits>\\n`, sorted by the name's UTF-8
bytes. Only names a package file name can start with are kept (routing.PACKAGE_NAME_RE: no tab,
no newline), so no upstream name can break a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .routing import PACKAGE_NAME_RE

LINE = 1 + 64 + 1  # the tab, the digest in hex, the newline


class Buffer(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> bytes: ...
    def rfind(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...
    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...


def encode_names(shards: Mapping[str, bytes]) -> bytes:
    """The lines of a checked index's map (values: 32-byte digests)."""
    lines = sorted(
        name.encode() + b"\t" + digest.hex().encode() + b"\n"
        for name, digest in shards.items()
        if PACKAGE_NAME_RE.match(name)
    )
    return b"".join(lines)


def find_digest(lines: Buffer, name: str) -> bytes | None:
    """The shard digest `name` maps to in `lines` (encode_names' output), or None. Raises
    ValueError where `lines` is not such a map."""
    wanted = name.encode()
    lo, hi = 0, len(lines)  # a line starts at lo; every line before lo sorts below `wanted`
    while lo < hi:
        mid = (lo + hi) // 2
        start = lines.rfind(b"\n", lo, mid) + 1 if mid > lo else lo
        start = max(start, lo)
        tab = lines.find(b"\t", start, hi)
        if tab < 0 or lines[tab + LINE - 1 : tab + LINE] != b"\n":
            raise ValueError("not a sorted name map")  # changed since it was written
        key = lines[start:tab]
        if key == wanted:
            return bytes.fromhex(lines[tab + 1 : tab + LINE - 1].decode("ascii"))
        if key < wanted:
            lo = tab + LINE
        else:
            hi = start
    return None
