"""Query-string parameters of the API, parsed by the same rules as the config (values.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ..rules.errors import BadRequest
from ..rules.values import parse_bool


class Params(Protocol):
    """A query string's parameters, each name with every value it was given (Starlette's)."""

    def getlist(self, key: str) -> list[str]: ...

    def keys(self) -> Iterable[str]: ...


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


def known(params: Params, names: tuple[str, ...], what: str) -> None:
    """A parameter `what` does not take is a 400 naming it and the ones it takes. A purge
    ignored them, so `?metadata-only=true` (the CLI's spelling) or `?packages=numpy` purged
    every file of the channel instead of its metadata or one package."""
    unknown = sorted(set(params.keys()) - set(names))
    if unknown:
        takes = ", ".join(f"'{n}'" for n in names) or "none"
        name = unknown[0] if len(unknown[0]) <= 60 else unknown[0][:57] + "..."
        raise BadRequest(
            f"query parameter '{name}' is not one {what} takes (it takes {takes})",
            parameter=name,
        )


def flag(params: Params | Mapping[str, str], name: str, *, bare_is_false: bool = True) -> bool:
    """`?force=true` and the like: absent or empty is false; anything but the documented
    spellings (true/false, 1/0, yes/no) is a 400 naming the parameter. Where false is the
    bigger change (`metadata_only`: a purge of every file), `bare_is_false=False` makes an
    empty or bare value (`?metadata_only`, which a person reads as "yes") a 400 too."""
    value = single(params, name)
    if value is None:
        return False
    if value == "" and bare_is_false:
        return False
    try:
        return parse_bool(value)
    except ValueError:
        raise BadRequest(
            f"query parameter '{name}' must be true or false, got {value!r}", parameter=name
        ) from None
