"""Pure parsing of a single `Range: bytes=...` header (RFC 9110 §14). No I/O."""

from __future__ import annotations

from .errors import RangeNotSatisfiable


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
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)  # `bytes=-N`: the last N bytes (rattler's sparse reader)
        if suffix == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, end
