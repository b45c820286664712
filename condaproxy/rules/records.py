"""Pure lookups in raw repodata bytes, without materialising a 200+ MB document. No I/O.

A package miss needs the sha256 and size the channel publishes for one file. `find_record`
reads it as a client would (its map, escapes, the last duplicate) while msgspec skips every
other record at C speed without allocating it; `find_keyed_objects` is a memchr-speed search
for objects under a key wherever they are (for rewrites that must miss none).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from .codecs import decode_json

_WHITESPACE = b" \t\r\n"


def object_span(buf: bytes | memoryview, start: int) -> int:
    """Index just past the JSON object whose `{` is at `start` (string- and escape-aware)."""
    depth = 0
    in_string = False
    i = start
    n = len(buf)
    while i < n:
        c = buf[i]
        if in_string:
            if c == 0x5C:  # backslash: skip the escaped character
                i += 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unterminated JSON object")


def _skip_ws(buf: Any, i: int) -> int:
    while i < len(buf) and buf[i] in _WHITESPACE:
        i += 1
    return i


def find_keyed_objects(buf: Any, key: str) -> list[tuple[int, int]]:
    """Spans of every JSON object that is the value of `"key": {...}` in buf."""
    needle = msgspec.json.encode(key)
    spans = []
    pos = buf.find(needle)
    while pos != -1:
        i = _skip_ws(buf, pos + len(needle))
        if i < len(buf) and buf[i] == 0x3A:  # ':'
            i = _skip_ws(buf, i + 1)
            if i < len(buf) and buf[i] == 0x7B:  # '{'
                spans.append((i, object_span(buf, i)))
        pos = buf.find(needle, pos + 1)
    return spans


def find_record(buf: Any, filename: str) -> dict[str, Any] | None:
    """The repodata record of `filename` as a conda client reads it, or None: the value of
    that key in the top-level map of its kind (`packages.conda` for a `.conda`, else
    `packages`; the other map when the first lists nothing), the last one when the key occurs
    twice, its escapes decoded. An object that merely looks like that record elsewhere (inside
    another record's field, under `info`, in the other map) is no record: searched for as raw
    bytes, a record that names another file inside it decided that file's checksum, so one
    package's record could make another fail verification for every client, or have a file no
    record lists cached. msgspec skips every other key without materialising it."""
    try:
        found = _record_bytes(buf, filename)
    except msgspec.DecodeError:  # ValidationError too: a map that is no object lists nothing
        return None
    if found is None:
        return None
    try:
        record = decode_json(found)
    except msgspec.DecodeError:
        return None
    return record if isinstance(record, dict) else None


def _record_bytes(buf: Any, filename: str) -> bytes | None:
    """The raw value of `filename` in its map, copied: no view into `buf` (an mmap the
    caller closes) outlives this frame."""
    shape = decode_json(buf, _lookup_type(filename))
    maps = (shape.conda, shape.bz2) if filename.endswith(".conda") else (shape.bz2, shape.conda)
    for one in maps:
        if len(one.record):
            return bytes(one.record)
    return None


@functools.lru_cache(maxsize=256)
def _lookup_type(filename: str) -> Any:
    """A repodata document's shape that keeps only `filename`'s value in each package map."""
    one = msgspec.defstruct(
        "OneRecord", [("record", msgspec.Raw, msgspec.Raw())], rename={"record": filename}
    )
    return msgspec.defstruct(
        "RecordMaps",
        [
            ("bz2", one, msgspec.field(default_factory=one)),
            ("conda", one, msgspec.field(default_factory=one)),
        ],
        rename={"bz2": "packages", "conda": "packages.conda"},
    )
