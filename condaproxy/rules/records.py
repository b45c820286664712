"""Pure lookups in raw repodata bytes, without parsing a 200+ MB document. No I/O.

A package miss needs the sha256 and size the channel publishes for one file; searching the
stored snapshot for that one record costs a memchr-speed scan and no memory, where decoding
conda-forge's linux-64 repodata would cost seconds and gigabytes.
"""

from __future__ import annotations

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
    """The repodata record of `filename` (from `packages` or `packages.conda`), or None."""
    for start, end in find_keyed_objects(buf, filename):
        try:
            record = decode_json(bytes(buf[start:end]))
        except msgspec.DecodeError:
            continue
        if isinstance(record, dict) and ("sha256" in record or "md5" in record or "name" in record):
            return record
    return None
