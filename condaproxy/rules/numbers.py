"""Pure rule for a number written in a header or a query (`Range`, `Content-Length`,
`Retry-After`, `?page=`). No I/O.

HTTP writes numbers as ASCII digits (RFC 9110 §5.6.1 `1*DIGIT`). `str.isdigit()` is not that
test: it also holds for `²`, `³`, `¹` (latin-1 bytes 0xb2, 0xb3, 0xb9, which is how a header's
bytes are decoded) and for other scripts' digits, which `int()` then refuses or reads; and
`int()` refuses any string of more than 4300 digits. Either way a hostile request became a
ValueError, a 500. Here a number is ASCII digits only, and a huge one saturates at `cap`
instead of being converted (no size, offset or delay the proxy handles comes near it).
"""

from __future__ import annotations

import re

CAP = 2**63 - 1  # larger than any file, offset or count the proxy deals with
_DIGITS = re.compile(r"[0-9]+")
_CAP_DIGITS = len(str(CAP))


def decimal(text: str | None, cap: int = CAP) -> int | None:
    """`text` as a non-negative integer if it is ASCII digits only (no sign, no spaces), at
    most `cap`; None for anything else. Leading zeros are allowed (`0007` is 7)."""
    if not text or not _DIGITS.fullmatch(text):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > _CAP_DIGITS:
        return cap
    return min(int(significant), cap)


def header_number(value: str | None) -> int | None:
    """A header's length or count (`Content-Length`): `decimal` of the field without its
    surrounding whitespace; None for anything else, and for a number so large no peer meant
    it (a length past CAP is no length)."""
    number = decimal((value or "").strip())
    return number if number is not None and number < CAP else None
