"""Query-string parameters of the API, parsed by the same rules as the config (values.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..rules.errors import BadRequest
from ..rules.values import parse_bool


class Params(Protocol):
    """A query string's parameters, each name with every value it was given (Starlette's)."""

    def getlist(self, key: str) -> list[str]: ...


def single(params: Params | Mapping[str, str], name: str) -> str | None:
    """The one value of `name`, or None. A parameter given twice with different values is
    a 400: `?metadata_only=true&metadata_only=false` took the last and purged every file,
    `?force=false&force=true` replaced an upload; an API that changes state does only
    what the request says unambiguously."""
    if isinstance(params, Mapping) and not hasattr(params, "getlist"):
        values = [params[name]] if name in params else []  # a form field, read once
    else:
        values = params.getlist(name)
    if len(set(values)) > 1:
        raise BadRequest(
            f"query parameter '{name}' is given more than once, with different values",
            parameter=name,
        )
    return values[0] if values else None


def flag(params: Params | Mapping[str, str], name: str) -> bool:
    """`?force=true` and the like: absent or empty is false; anything but the documented
    spellings (true/false, 1/0, yes/no) is a 400 naming the parameter."""
    value = single(params, name)
    if value is None or value == "":
        return False
    try:
        return parse_bool(value)
    except ValueError:
        raise BadRequest(
            f"query parameter '{name}' must be true or false, got {value!r}", parameter=name
        ) from None
