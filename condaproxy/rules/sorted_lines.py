"""Pure rule: a map of `key\\tvalue\\n` lines sorted by the key's bytes, searched where it lies
(an mmap of a stored file) by bisection: a lookup touches a few pages whatever the map's size.
No I/O.

Keys hold no tab and no newline, values no newline (the writers guarantee it: shard_names.py,
record_lines.py). A buffer that breaks that shape (a file changed on disk since it was written)
is a ValueError, never a wrong answer taken for a right one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Buffer(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> bytes: ...
    def rfind(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...
    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...


def encode_lines(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The sorted lines of `pairs` (key, value); the caller keeps tabs and newlines out."""
    return b"".join(sorted(key + b"\t" + value + b"\n" for key, value in pairs))


def find_value(lines: Buffer, wanted: bytes) -> bytes | None:
    """The value of key `wanted` in `lines` (encode_lines' output), or None."""
    lo, hi = 0, len(lines)  # a line starts at lo; every line before lo sorts below `wanted`
    while lo < hi:
        mid = (lo + hi) // 2
        start = max(lines.rfind(b"\n", lo, mid) + 1 if mid > lo else lo, lo)
        tab = lines.find(b"\t", start, hi)
        end = lines.find(b"\n", tab, hi) if tab >= 0 else -1
        if tab < 0 or end < 0 or b"\n" in lines[start:tab]:
            raise ValueError("not a sorted map of lines")  # changed since it was written
        key = lines[start:tab]
        if key == wanted:
            return lines[tab + 1 : end]
        if key < wanted:
            lo = end + 1
        else:
            hi = start
    return None
