"""Pure rules for who is asking and where they think the proxy is, behind reverse proxies.

X-Forwarded-For/-Proto/-Host are believed only from a configured trusted proxy: anyone can
send them. The client is the rightmost address of X-Forwarded-For that is not itself a trusted
proxy (earlier entries are whatever the client claimed). No I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: tuple[Network, ...]
) -> str:
    if peer is None:
        return "-"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop[:64]
    return peer


def external_base(
    peer: str | None,
    headers: Mapping[str, str],
    trusted: tuple[Network, ...],
    configured: str,
    scheme: str,
) -> str:
    """The proxy's URL as its clients reach it: `server.external_url` if set; else the
    request's Host, with X-Forwarded-Proto/-Host when a trusted proxy sent them."""
    if configured:
        return configured.rstrip("/")
    host = headers.get("host", "localhost")
    if peer is not None and trusted and _trusted(peer, trusted):
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        scheme = proto if proto in ("http", "https") else scheme
        forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
        host = forwarded or host
    if not _HOST.match(host):
        host = "localhost"
    return f"{scheme}://{host}"


def request_id(given: str | None, make: str) -> str:
    """The caller's X-Request-Id when it is a sane token, else ours."""
    return given if given is not None and _REQUEST_ID.match(given) else make


def scope_base(
    scope: Mapping[str, Any],
    headers: Mapping[str, str],
    trusted: tuple[Network, ...],
    configured: str,
) -> str:
    """external_base for an ASGI request scope (its peer address and scheme)."""
    peer = scope.get("client")
    return external_base(
        peer[0] if peer else None, headers, trusted, configured, scope.get("scheme", "http")
    )
