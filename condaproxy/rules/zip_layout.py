"""Pure rule: a .conda's zip is exactly the entries its central directory lists, laid end to end
from its first byte. No I/O (unpack.py reads the headers).

Zip readers disagree about what a zip holds. Python's zipfile (the proxy's check, and
conda-package-handling) reads the central directory at the end and seeks to each entry it
lists. rattler extracts a .conda as a stream (the zip crate's `read_zipfile_from_stream`): local
header after local header from byte 0, unpacking every `*.tar.zst` it meets. So an entry the
central directory does not list, before, between or after the listed ones, is never checked by
the first kind of reader and is installed by the second; and a local header whose sizes differ
from the directory's makes a streaming reader cut the entry elsewhere, and find another header
inside what the proxy read as data. Therefore each listed entry's local header must agree with
the directory (name, method, crc, sizes, not encrypted), state its sizes itself (no data
descriptor: a streaming reader cannot find the end of a stored entry without them), and start
where the previous entry ends; the first at byte 0, the last ending where the directory begins.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .archive import InvalidPackage

LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile.structFileHeader
LOCAL_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED, _DATA_DESCRIPTOR, _UTF8 = 0x1, 0x8, 0x800
_ZIP64_EXTRA = 0x0001
_ZIP64_MARK = 0xFFFFFFFF


@dataclass(frozen=True)
class Listed:
    """An entry as the central directory lists it."""

    name: str
    header_offset: int
    method: int
    crc: int
    compress_size: int
    file_size: int


def local_header_size(fixed: bytes, entry: Listed) -> int:
    """The whole size of the local header whose first 30 bytes are `fixed`."""
    if len(fixed) != LOCAL_HEADER.size or fixed[:4] != LOCAL_SIGNATURE:
        raise InvalidPackage(
            f"the .conda's central directory points {entry.name!r} at something that is not a "
            "local file header",
            member=entry.name,
        )
    fields = LOCAL_HEADER.unpack(fixed)
    return LOCAL_HEADER.size + fields[10] + fields[11]


def entry_end(entry: Listed, header: bytes) -> int:
    """The offset just past `entry`'s data, given its whole local header; refuses a local
    header that says anything else than the central directory."""
    fields = LOCAL_HEADER.unpack(header[: LOCAL_HEADER.size])
    flags, method, crc, compress_size, file_size, name_length = fields[3:5] + fields[7:11]
    raw_name = header[LOCAL_HEADER.size : LOCAL_HEADER.size + name_length]
    extra = header[LOCAL_HEADER.size + name_length :]
    try:
        name = raw_name.decode("utf-8" if flags & _UTF8 else "cp437")
    except UnicodeDecodeError:
        name = None
    if _ZIP64_MARK in (compress_size, file_size):
        file_size, compress_size = _zip64_sizes(extra, file_size, compress_size)
    said = (name, method, crc, compress_size, file_size)
    listed = (entry.name, entry.method, entry.crc, entry.compress_size, entry.file_size)
    if flags & (_ENCRYPTED | _DATA_DESCRIPTOR) or said != listed:
        raise InvalidPackage(
            f"the .conda's local header of {entry.name!r} does not state what its central "
            "directory does (name, method, crc and sizes, no data descriptor): readers that "
            "stream the zip would read another package",
            member=entry.name,
        )
    return entry.header_offset + len(header) + compress_size


def _zip64_sizes(extra: bytes, file_size: int, compress_size: int) -> tuple[int, int]:
    """The sizes a zip64 extra field holds for the fields marked 0xFFFFFFFF (APPNOTE 4.5.3)."""
    at = 0
    while at + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4 : at + 4 + size]
        if kind == _ZIP64_EXTRA:
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if file_size == _ZIP64_MARK and values:
                file_size = values.pop(0)
            if compress_size == _ZIP64_MARK and values:
                compress_size = values.pop(0)
            break
        at += 4 + size
    return file_size, compress_size


def check_layout(ends: list[tuple[Listed, int]], start_dir: int) -> None:
    """Each listed entry starts where the one before it ends, the first at byte 0, and the last
    ends where the central directory starts: no byte before the directory is unaccounted for."""
    position = 0
    for entry, end in sorted(ends, key=lambda pair: pair[0].header_offset):
        if entry.header_offset != position:
            raise InvalidPackage(
                f"the .conda's entry {entry.name!r} starts at offset {entry.header_offset}, not "
                f"where the one before it ends ({position}): bytes its central directory does "
                "not list (a reader that streams the zip would unpack what they hold)",
                member=entry.name,
            )
        position = end
    if position != start_dir:
        raise InvalidPackage(
            f"the .conda's central directory starts at offset {start_dir}, not where its last "
            f"entry ends ({position}): bytes it does not list (a reader that streams the zip "
            "would unpack what they hold)"
        )
