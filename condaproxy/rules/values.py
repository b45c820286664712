"""Pure parsing of the scalar values people write in config, environment and query strings.

One parser per kind of value for the whole code base: a boolean means the same thing in
`proxy.toml` (via the environment), in `CONDAPROXY_*` and in `?force=`. No I/O.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-z]*)$")


def parse_bool(text: str) -> bool:
    """`true/false/1/0/yes/no`, any case; anything else is a ValueError (never a silent False:
    `private = "yes please"` must not start a private channel as public)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false, 1/0, yes/no)")


def parse_size(value: object) -> int:
    """Bytes from `2GiB`, `500 MB`, `1.5GiB` or a whole number. Negative, fractional-byte,
    boolean and non-finite values are refused."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number of bytes")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size")
    match = _SIZE_RE.match(value.strip().lower())
    if match is None or match["unit"] not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size (like 500MB, 2GiB or 1048576)")
    # Exact arithmetic: `1.1GiB` is rounded down to whole bytes, but a fraction of a byte is
    # refused as the same number written as a TOML float is, and so is anything that would
    # round to 0 (for max_size, 0 means unbounded: "0.5" must not lift the limit).
    number = Fraction(match["number"])
    size = number * _SIZE_UNITS[match["unit"]]
    if match["unit"] in ("", "b") and size.denominator != 1:
        raise ValueError(f"{value!r} is not a whole number of bytes")
    if number and size < 1:
        raise ValueError(f"{value!r} is less than one byte")
    return int(size)
