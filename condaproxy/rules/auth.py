"""Pure rules: who is asking (token forms) and what they may do (roles). No I/O.

Tokens arrive as `X-API-Key` (quetz-client), `Authorization: Bearer` (rattler, mamba), HTTP
basic auth with the token as password (conda's netrc/userinfo) or the anaconda.org style
`/t/<token>/` path prefix. Every configured token is compared in constant time, so response
timing does not reveal how much of a guess was right.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

from .errors import ProxyError

ROLES: tuple[str, ...] = ("read", "write", "admin")  # each includes the ones before it
_RANK = {role: i for i, role in enumerate(ROLES, start=1)}


class SecretLike(Protocol):
    @property
    def value(self) -> str: ...


class Token(Protocol):
    """A configured token as these rules see it (settings.TokenSettings is one)."""

    @property
    def name(self) -> str: ...

    @property
    def token(self) -> SecretLike: ...

    def role_for(self, channel: str) -> str | None: ...


T = TypeVar("T", bound=Token)
REALM = 'Basic realm="condaproxy", Bearer realm="condaproxy"'


class Unauthorized(ProxyError):
    """401: no usable token. Clients are told how to authenticate."""

    status = 401
    headers = {"www-authenticate": REALM}  # noqa: RUF012


class Forbidden(ProxyError):
    """403: a valid token whose role on this channel is not enough."""

    status = 403


def presented_token(headers: Mapping[str, str], path_token: str | None) -> str | None:
    """The token a request carries, in any of the accepted forms."""
    if key := headers.get("x-api-key"):
        return key.strip()
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except ValueError:  # not base64 (binascii.Error), not ASCII at all, not UTF-8 inside
            return None
        _, _, password = decoded.partition(":")
        return password or None
    return path_token


def same_secret(given: str, expected: str) -> bool:
    """`given == expected` in constant time. Compared as UTF-8 bytes: hmac.compare_digest
    refuses str with non-ASCII characters (TypeError), and a header may hold any of them."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def identify(token: str | None, tokens: Iterable[T]) -> T | None:
    """The configured token matching `token`, comparing against all of them in constant time."""
    if not token:
        return None
    found = None
    for candidate in tokens:
        if same_secret(token, candidate.token.value):
            found = candidate
    return found


def has_role(who: Token | None, channel: str, needed: str) -> bool:
    if who is None:
        return False
    role = who.role_for(channel)
    return role is not None and _RANK[role] >= _RANK[needed]


def require(who: Token | None, presented: bool, channel: str, needed: str) -> None:
    """Raise 401 (no or unknown token) or 403 (role too low) unless `who` may act."""
    if who is None:
        reason = "unknown token" if presented else "a token is required"
        raise Unauthorized(f"{reason}: '{needed}' access to channel '{channel}' needs one")
    if not has_role(who, channel, needed):
        raise Forbidden(f"token '{who.name}' may not {needed} channel '{channel}'", token=who.name)
