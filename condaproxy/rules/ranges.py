"""Pure parsing of a single `Range: bytes=...` header (RFC 9110 §14). No I/O."""

from __future__ import annotations

from .errors import RangeNotSatisfiable
from .numbers import decimal


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return (start, end_exclusive) for one satisfiable byte range, None to send the whole
    file (no header, a malformed one, or several ranges: a server may ignore Range), or raise
    RangeNotSatisfiable (416)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    # ASCII digits only (numbers.py): `²` or 5000 digits are a malformed header, not a 500.
    start, final = decimal(first), decimal(last)
    if (start is None and first != "") or (final is None and last != ""):
        return None
    if start is None:
        if final is None:
            return None
        if final == 0:  # `bytes=-N`: the last N bytes (rattler's sparse reader)
            raise RangeNotSatisfiable(size)
        return max(0, size - final), size
    if final is not None and final < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, size if final is None else min(final + 1, size)
