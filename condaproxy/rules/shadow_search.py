"""Proving by search that the uploads hide no upstream record of a document. No I/O.

The merge (merge.py) passes an upstream package map through byte for byte only when this proof
holds; otherwise it decodes the map and applies the rule (shadowing.py) member by member. The
proof must therefore find every record the rule could hide, whatever its case or encoding:

- a member key that is an uploaded file name, or starts with a shadowed name and `-`;
- a `name` field whose value, lowercased, is a shadowed name.

Sound because the document is valid JSON (decoded before). A string is written either with an
escape sequence somewhere in it, or as its plain UTF-8 bytes:

- every string holding a backslash is looked at: an escaped key is a doubt, and an escaped
  value short enough to be a name is decoded and compared;
- plain strings are found by one case-insensitive regular expression for `"<name>-`,
  `"<name>"` (ASCII letters in either case, and `k` also as the Kelvin sign U+212A, the one
  non-ASCII character whose lowercase is ASCII) and `"<uploaded file name>"`. A hit that is a
  key the rule hides, or a value right after a colon (it may be a `name` field: nothing cheaper
  tells), disproves; any other hit (an array element, a key the rule keeps, a quote inside a
  string) proves nothing and is passed over.

Any doubt (a bounded look gave up, too many hits) answers False: decoding is always right, only
slower. The regular expression runs in C, ~0.2 s for 280 MB (bytes.find, which cannot fold
case, took ~0.08 s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from .json_search import (
    COLON,
    NEAR,
    WHITESPACE,
    Doubt,
    Searchable,
    closing_quote,
    first_token,
    is_escaped,
    key_at,
)
from .shadowing import hides, package_name

# Past this many names and file names to look for, decoding is cheaper than a long alternation.
MAX_SEARCHES = 4
# Past this many candidate hits (keys to look at, strings with escapes), decoding is cheaper.
MAX_CANDIDATES = 100_000
KELVIN = "\u212a"  # "\u212a".lower() == "k"


def nothing_to_drop(buf: Searchable, shadow: set[str], local: Mapping[str, Any]) -> bool:
    """Whether no record of `buf` is one the rule hides, proven by searches (module docstring)."""
    files = sorted(fn for fn in local if package_name(fn) not in shadow)
    if not shadow and not files:
        return True
    if len(shadow) + len(files) > MAX_SEARCHES or not all(name.isascii() for name in shadow):
        return False  # (a non-ASCII name may have case forms the search does not know)
    try:
        if _escaped_string_may_hide(buf, shadow):
            return False
        budget = MAX_CANDIDATES
        for hit in _pattern(shadow, files).finditer(buf):
            if _hit_may_hide(buf, hit, shadow, local):
                return False
            budget -= 1
            if budget < 0:
                return False
    except Doubt:
        return False
    return True


def _pattern(shadow: set[str], files: list[str]) -> re.Pattern[bytes]:
    """`"<name>-` or `"<name>"` in any case, or `"<file name>"` (in any case too: a superset,
    each hit is checked). re.IGNORECASE on bytes folds ASCII letters only, so `k` also
    matches the Kelvin sign explicitly (UTF-8 e2 84 aa)."""
    names = [b"".join(_letter(c) for c in name) for name in sorted(shadow)]
    exact = [re.escape(fn.encode()) for fn in files]
    branches = [b"(?:" + b"|".join(names) + b')(?P<end>[-"])'] if names else []
    if exact:
        branches.append(b"(?:" + b"|".join(exact) + b')"')
    return re.compile(b'"(?:' + b"|".join(branches) + b")", re.IGNORECASE)


def _letter(c: str) -> bytes:
    escaped = re.escape(c.encode())
    return b"(?:k|" + re.escape(KELVIN.encode()) + b")" if c.lower() == "k" else escaped


def _hit_may_hide(
    buf: Searchable, hit: re.Match[bytes], shadow: set[str], local: Mapping[str, Any]
) -> bool:
    """Whether the string a hit opens may be one the rule hides: a key it hides, or a whole
    shadowed name after a colon (the value of a `name` field, maybe). `"<name>-...` as a value
    is another name (`ours-extra`), a file name as a value (`fn`) hides nothing."""
    at = hit.start()
    if hit.groupdict().get("end") == b'"' and _after_colon(buf, at):
        return True
    key = key_at(buf, at)
    return key is not None and hides(key, None, shadow, local)


def _after_colon(buf: Searchable, at: int) -> bool:
    """Whether the last token before `at` is a colon (the string at `at` is a member's value)."""
    before = bytes(buf[max(at - NEAR, 0) : at]).rstrip(WHITESPACE)
    if not before and at >= NEAR:
        raise Doubt
    return before[-1:] == bytes([COLON])


def _escaped_string_may_hide(buf: Searchable, shadow: set[str]) -> bool:
    """Whether some string written with an escape sequence may be one the rule hides: any key
    (file names are keys), or a value that decodes to a shadowed name in some case. A value
    longer than a fully escaped name is no name and is passed over. Past MAX_CANDIDATES such
    strings, answers True (the cautious side)."""
    longest = 6 * max(map(len, shadow), default=0) + 2  # `"` + `\uXXXX` per character + `"`
    at = buf.find(b"\\")
    for _ in range(MAX_CANDIDATES):
        if at == -1:
            return False
        end = closing_quote(buf, at)
        if first_token(buf, end + 1) == COLON:
            return True
        start = _opening_quote(buf, at, end + 1 - longest)
        if start is not None:
            try:
                value = msgspec.json.decode(bytes(buf[start : end + 1]), type=str)
            except msgspec.DecodeError:
                raise Doubt from None
            if value.lower() in shadow:
                return True
        at = buf.find(b"\\", end + 1)
    return True


def _opening_quote(buf: Searchable, inside: int, lowest: int) -> int | None:
    """The opening quote of the string holding position `inside`, if it is at `lowest` or
    after: inside a string every quote is escaped, so it is the last unescaped one before."""
    lowest = max(lowest, 0)
    at = buf.rfind(b'"', lowest, inside)
    for _ in range(NEAR):
        if at == -1:
            return None
        if not is_escaped(buf, at):
            return at
        at = buf.rfind(b'"', lowest, at)
    raise Doubt
