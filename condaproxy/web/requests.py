"""What every API handler needs from a request: its path below the API prefix (checked by the
one path rule), who is asking, and the configured channel it names."""

from __future__ import annotations

from starlette.requests import Request

from ..rules.auth import identify, presented_token
from ..rules.errors import BadRequest
from ..rules.paths import raw_path_of, split_raw_path
from ..rules.routing import PACKAGE_RE, SUBDIR_RE, unknown_channel
from ..settings import Settings, TokenSettings

CHANNELS = ("api", "channels")
CACHE = ("api", "cache")


def api_path(request: Request, prefix: tuple[str, ...]) -> str:
    """The path below `prefix`, as decoded segments joined by `/`. The raw path is split and
    each segment decoded once and checked (rules/paths.split_raw_path, the rule channel paths
    follow too), so an encoded slash or dot segment cannot pass for a path step."""
    segments = split_raw_path(raw_path_of(request.scope))
    if tuple(segments[: len(prefix)]) != prefix:
        return ""
    return "/".join(segments[len(prefix) :])


def known_channel(name: str, settings: Settings, who: TokenSettings | None) -> str:
    """`name` if it is a configured channel; else the unknown-channel 404 for this caller."""
    if name not in settings.channels:
        raise unknown_channel(f"unknown channel '{name}'", settings.channels, who)
    return name


def who_is_asking(request: Request, settings: Settings) -> tuple[TokenSettings | None, bool]:
    token = presented_token(request.headers, request.scope.get("state", {}).get("path_token"))
    return identify(token, settings.tokens.values()), token is not None


def subdir_param(text: str) -> str:
    if not SUBDIR_RE.match(text):
        raise BadRequest(f"'{text}' is not a conda subdir (noarch or <platform>-<arch>)")
    return text


def package_param(text: str) -> str:
    if not PACKAGE_RE.match(text):
        raise BadRequest(f"'{text}' is not <name>-<version>-<build>.conda or .tar.bz2")
    return text
