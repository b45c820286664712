"""Query-string parameters of the API, parsed by the same rules as the config (values.py)."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import BadRequest
from .values import parse_bool


def flag(params: Mapping[str, str], name: str) -> bool:
    """`?force=true` and the like: absent or empty is false; anything but the documented
    spellings (true/false, 1/0, yes/no) is a 400 naming the parameter."""
    value = params.get(name)
    if value is None or value == "":
        return False
    try:
        return parse_bool(value)
    except ValueError:
        raise BadRequest(
            f"query parameter '{name}' must be true or false, got {value!r}", parameter=name
        ) from None
