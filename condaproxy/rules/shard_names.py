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

from .routing import PACKAGE_NAME_RE
from .sorted_lines import Buffer, encode_lines, find_value

LINE = 1 + 64 + 1  # the tab, the digest in hex, the newline


def encode_names(shards: Mapping[str, bytes]) -> bytes:
    """The lines of a checked index's map (values: 32-byte digests)."""
    return encode_lines(
        (name.encode(), digest.hex().encode())
        for name, digest in shards.items()
        if PACKAGE_NAME_RE.match(name)
    )


def find_digest(lines: Buffer, name: str) -> bytes | None:
    """The shard digest `name` maps to in `lines` (encode_names' output), or None. Raises
    ValueError where `lines` is not such a map."""
    found = find_value(lines, name.encode())
    if found is None:
        return None
    if len(found) != LINE - 2:
        raise ValueError("not a sorted name map")  # changed since it was written
    return bytes.fromhex(found.decode("ascii"))
