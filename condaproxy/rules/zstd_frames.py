"""Whether bytes are whole zstd frames (RFC 8878 §3.1), read from the frame and block headers
alone: nothing is decompressed, so checking a 40 MB `repodata.json.zst` costs a few thousand
header reads. No I/O: the caller hands over the bytes (an mmap is fine).

A streaming decoder yields everything a frame cut short holds: a `.zst` that lost its last
block or its 4-byte checksum in transit decodes to a complete JSON document there, while
conda's, mamba's and rattler's decoders (and `zstd -d`) refuse it as an incomplete frame.
Such bytes must never pass through as a variant clients are served.

The walk costs one step per block and frame, and either may be empty: `max_blocks` bounds it, so a
hostile body of millions of 3-byte blocks costs a fraction of a second, not minutes.
"""

from __future__ import annotations

import mmap

MAGIC = 0xFD2FB528
SKIPPABLE = 0x184D2A50  # ... 0x184D2A5F: the low 4 bits are free (§3.1.2)
_FCS_SIZES = (0, 2, 4, 8)
_DICT_ID_SIZES = (0, 1, 2, 4)
_RLE = 1
_RESERVED = 3


def zstd_problem(data: bytes | memoryview | mmap.mmap, max_blocks: int = 1 << 20) -> str | None:
    """What keeps `data` from being a sequence of complete zstd frames (at least one that is
    not skippable, nothing after the last, at most `max_blocks` blocks in all), or None."""
    with memoryview(data) as view:  # released on return: an mmap under it may be closed
        return _problem(view.cast("B"), max_blocks)


def _problem(view: memoryview, max_blocks: int) -> str | None:
    size, at, frames, blocks = len(view), 0, 0, [max_blocks]
    while at < size:
        if size - at < 4:
            return f"{size - at} stray bytes after the last frame"
        magic = int.from_bytes(view[at : at + 4], "little")
        blocks[0] -= 1  # a skippable frame costs a step too
        if blocks[0] < 0:
            return "has more frames and blocks than any document within the size limit needs"
        if magic & 0xFFFFFFF0 == SKIPPABLE:
            if size - at < 8:
                return "a skippable frame is cut short"
            at += 8 + int.from_bytes(view[at + 4 : at + 8], "little")
            if at > size:
                return "a skippable frame is cut short"
            continue
        if magic != MAGIC:
            return f"no zstd frame at byte {at}"
        end = _frame_end(view, at + 4, blocks)
        if isinstance(end, str):
            return f"the zstd frame at byte {at} {end}"
        at, frames = end, frames + 1
    return None if frames else "no zstd frame"


def _frame_end(view: memoryview, at: int, budget: list[int]) -> int | str:
    """Where the frame whose header starts at `at` (after its magic) ends, or what is wrong.
    `budget` holds how many blocks may still be walked."""
    size = len(view)
    if at >= size:
        return "has no header"
    descriptor = view[at]
    if descriptor & 0x08:
        return "has a reserved header bit set"
    single_segment = bool(descriptor & 0x20)
    fcs_flag = descriptor >> 6
    fcs = 1 if fcs_flag == 0 and single_segment else _FCS_SIZES[fcs_flag]
    at += 1 + (0 if single_segment else 1) + _DICT_ID_SIZES[descriptor & 0x03] + fcs
    while True:
        budget[0] -= 1
        if budget[0] < 0:
            return "has more blocks than any document within the size limit needs"
        if at + 3 > size:
            return "is cut short (a block is missing)"
        header = int.from_bytes(view[at : at + 3], "little")
        last, kind, length = header & 1, (header >> 1) & 3, header >> 3
        if kind == _RESERVED:
            return "has a block of a reserved type"
        at += 3 + (1 if kind == _RLE else length)
        if at > size:
            return "is cut short (a block is incomplete)"
        if last:
            break
    if descriptor & 0x04:  # Content_Checksum_flag: 4 bytes follow the last block
        at += 4
        if at > size:
            return "is cut short (its checksum is missing)"
    return at
