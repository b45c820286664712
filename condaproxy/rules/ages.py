"""Pure rules for the ages a supply-chain policy is written in (issue 13). No I/O.

An age is one of:
- an integer with a unit, `s` `m` `h` `d` `w` (`36h`, `7d`, `2w`); `0` alone means off;
- an ISO 8601 duration with weeks, days, hours, minutes, seconds (`P7D`, `PT20S`, `P1DT12H`);
  years and months are refused (their length is not fixed);
- an RFC 3339 date-time with an offset (`2026-01-01T00:00:00Z`): an absolute cutoff, so a record
  published after it is held until the configuration changes.

A negative age, an unknown unit or a date-time without an offset is a ValueError whose message
says what is wrong; the config loader turns it into one line naming the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIMPLE = re.compile(r"^(?P<n>[0-9]+)\s*(?P<unit>[a-z]*)$")
_ISO = re.compile(
    r"^P(?:(?P<w>[0-9]+)W)?(?:(?P<d>[0-9]+)D)?"
    r"(?:T(?=[0-9])(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+(?:[.,][0-9]+)?)S)?)?$"
)
# RFC 3339 §5.6: full-date "T" full-time, where full-time carries an offset (Z or ±hh:mm).
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


@dataclass(frozen=True)
class Age:
    """A hold: `seconds` after publication, or everything published after `cutoff` (epoch s)."""

    text: str
    seconds: float = 0.0
    cutoff: float | None = None

    @property
    def off(self) -> bool:
        return self.cutoff is None and self.seconds <= 0

    def release(self, published: float) -> float | None:
        """When a record published at `published` is released: None means never (a cutoff)."""
        if self.cutoff is not None:
            return -math.inf if published <= self.cutoff else None
        return published + self.seconds

    def holds(self, published: float, now: float) -> bool:
        release = self.release(published)
        return release is None or now < release


OFF = Age("0")


def parse_age(value: object) -> Age:
    """An Age from config text (or the integer 0). ValueError says why a value is refused."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an age")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        if value == 0:
            return OFF
        raise ValueError(f"{value} needs a unit (like {value}s, {value}h or {value}d)")
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an age")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"{value!r} is negative")
    if simple := _SIMPLE.match(text.lower()):
        number, unit = int(simple["n"]), simple["unit"]
        if unit == "" and number == 0:
            return OFF
        if unit not in _UNITS:
            raise ValueError(
                f"{value!r} has an unknown unit {unit!r} (use s, m, h, d or w, like 7d)"
                if unit
                else f"{value!r} needs a unit (like {number}s, {number}h or {number}d)"
            )
        return Age(text, float(number * _UNITS[unit]))
    if text.upper().startswith("P"):
        return _iso_duration(text)
    if _RFC3339.match(text):
        try:
            when = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ValueError(f"{value!r} is not a valid RFC 3339 date-time") from None
        return Age(text, cutoff=when.timestamp())
    raise ValueError(
        f"{value!r} is not an age (like 36h, 7d, 2w, P7D, PT20S, or an RFC 3339 date-time "
        "such as 2026-01-01T00:00:00Z)"
    )


def _iso_duration(text: str) -> Age:
    match = _ISO.match(text.upper())
    if match is None or text.upper() in {"P", "PT"}:
        raise ValueError(
            f"{text!r} is not an ISO 8601 duration this proxy takes (weeks, days, hours, "
            "minutes, seconds: P7D, PT20S, P1DT12H; years and months have no fixed length)"
        )
    parts = {k: float((v or "0").replace(",", ".")) for k, v in match.groupdict().items()}
    seconds = sum(parts[k] * _UNITS[k] for k in ("w", "d", "h", "m", "s"))
    return Age(text, seconds) if seconds > 0 else OFF
