"""Bounded looks at raw JSON bytes around a position a search found. No I/O.

A memchr-speed search (`bytes.find`, `mmap.find`) of a 280 MB document finds where some bytes
occur; whether an occurrence is an object key, and which key, takes a look at a few bytes
around it. The document must be valid JSON (decoded before), which makes those looks sound:
a backslash only occurs inside a string (RFC 8259 section 7), an unescaped quote followed by
a letter, digit or '_' opens a string (a closing one is followed by whitespace, ':', ',', ']' or
'}'), and a string followed by ':' is an object key.

No look walks a long run byte by byte: past NEAR bytes of whitespace, of backslashes in a row,
of key, or NEAR escaped quotes in one string, it raises `Doubt` and the caller decodes instead
(real documents come nowhere near; a hostile one must not turn a search into a Python loop
over hundreds of megabytes).
"""

from __future__ import annotations

import mmap

# A buffer the searches run on: bytes.find and mmap.find are C loops.
Searchable = bytes | mmap.mmap

NEAR = 256
WHITESPACE = b" \t\r\n"  # RFC 8259 section 2
COLON, QUOTE, OPEN, CLOSE = 0x3A, 0x22, 0x7B, 0x7D


class Doubt(Exception):
    """A look met something it will not walk byte by byte: decoding decides instead."""


def first_token(buf: Searchable | memoryview, at: int) -> int:
    """The first byte at or after `at` that is not whitespace (-1 at the end)."""
    near = bytes(buf[at : at + NEAR]).lstrip(WHITESPACE)
    if near:
        return near[0]
    if at + NEAR < len(buf):
        raise Doubt
    return -1


def is_escaped(buf: Searchable, at: int) -> bool:
    """Whether the character at `at` follows an odd run of backslashes."""
    before = bytes(buf[max(at - NEAR, 0) : at])
    run = len(before) - len(before.rstrip(b"\\"))
    if run == NEAR:
        raise Doubt
    return run % 2 == 1


def closing_quote(buf: Searchable, start: int) -> int:
    """Index of the first unescaped quote at or after `start`, which is inside a string."""
    at = buf.find(b'"', start)
    for _ in range(NEAR):
        if at == -1:
            raise Doubt  # an unterminated string: not a decoded document
        if not is_escaped(buf, at):
            return at
        at = buf.find(b'"', at + 1)
    raise Doubt


def key_at(buf: Searchable, at: int) -> str | None:
    """The object key whose opening quote a search found at `at` (the next byte a letter,
    digit or '_'), or None when that quote is escaped (it sits inside a string) or opens a
    value. The key must hold no escape sequence (rules/shadow_search.py checks escaped strings)."""
    if is_escaped(buf, at):
        return None
    end = closing_quote(buf, at + 1)
    if first_token(buf, end + 1) != COLON:
        return None
    if end - at > NEAR:
        raise Doubt
    try:
        return bytes(buf[at + 1 : end]).decode()
    except UnicodeDecodeError:
        raise Doubt from None
