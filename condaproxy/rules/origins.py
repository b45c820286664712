"""Pure rules for where the proxy may send a request, and with what credentials. No I/O.

Upstream metadata names other hosts (CEP-15 `info.base_url`, CEP-16 `base_url` and
`shards_base_url`) and upstreams answer with redirects (anaconda.org's presigned package
URLs), so the proxy fetches from URLs it did not configure. Two invariants follow:

- Credentials (path token, basic, bearer) go only to the configured upstream's own origin:
  the exact scheme, host and port (RFC 6454 §4; default ports 80/443 made explicit, the host
  compared case-insensitively, IP literals in their canonical form).
- A foreign origin is fetched only when every address its host resolves to is of the same
  class as one of the upstream's addresses (public, private, loopback, link-local), so a
  public upstream cannot steer the proxy at 169.254.169.254 or a pod IP. The configured
  upstream and the channel's `allowed_origins` are configuration, trusted as written.

Addresses are classified after resolution, never by the spelling of a host: `2130706433`,
`0x7f.1` and `0177.0.0.1` are names the resolver turns into 127.0.0.1.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Iterable
from typing import Literal, NamedTuple

import httpx

AddressClass = Literal["loopback", "private", "link-local", "public", "forbidden"]

DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 6598 shared address space (carrier-grade NAT): not global, and Python's
# `is_private` does not cover it.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
# RFC 1122 §3.2.1.3 "this network": 0.0.0.0 reaches the local host on Linux.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
# RFC 6052 NAT64 well-known prefix: the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Origin(NamedTuple):
    """An RFC 6454 origin, normalised so equal origins compare equal."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


MAX_PORT = 65535


def origin_of(url: str | httpx.URL) -> Origin:
    """The origin httpx will connect to for `url` (parsed by httpx itself, so the rule and
    the client can never read a URL differently). Raises ValueError for a URL that is not
    http(s) or has no host."""
    if isinstance(url, str):
        return _origin_of_text(url)
    return _origin_of_parsed(url)


@functools.lru_cache(maxsize=256)
def _origin_of_text(url: str) -> Origin:
    """A configured base URL's origin is asked for on every upstream request: parsed once."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a usable URL: {exc}") from None
    return _origin_of_parsed(parsed)


def _origin_of_parsed(parsed: httpx.URL) -> Origin:
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme or '(none)'!r} is not http or https")
    host = normal_host(parsed.raw_host.decode("ascii"))
    if not host:
        raise ValueError("URL has no host")
    if parsed.port is not None and not 0 < parsed.port <= MAX_PORT:
        # httpx reads `:99999` as a port; no client can connect there (the aiohttp transport
        # raised on it: a redirect to such a URL was a 500, not the upstream's 502).
        raise ValueError(f"port {parsed.port} is not a TCP port")
    return Origin(scheme, host, parsed.port or DEFAULT_PORTS[scheme])


@functools.lru_cache(maxsize=1024)
def normal_host(host: str) -> str:
    """Lower case, no trailing dot, IP literals in canonical form ([0:0::1] is [::1]).
    Pure, and asked for a few times per upstream request: remembered."""
    host = host.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def address_class(ip: str | int | ipaddress.IPv4Address | ipaddress.IPv6Address) -> AddressClass:
    """What an address really reaches. IPv6 forms that embed an IPv4 address (mapped
    ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) are classified by that address.
    Anything that does not parse is "forbidden" (fail closed)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "forbidden"
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            return address_class(embedded)
    if addr.is_unspecified or addr.is_multicast or addr in _THIS_NETWORK:
        return "forbidden"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link-local"
    if addr in _SHARED:
        return "private"
    if addr == ipaddress.IPv4Address("255.255.255.255") or addr.is_reserved:
        return "forbidden"
    if addr.is_private or getattr(addr, "is_site_local", False):
        return "private"  # RFC 1918, ULA fc00::/7, documentation and benchmark ranges
    return "public" if addr.is_global else "private"


def trusted(target: Origin, upstream: Origin, allowed: Iterable[str]) -> bool:
    """The configured upstream's origin and the operator's `allowed_origins` are fetched
    without looking at addresses: they are configuration."""
    return target == upstream or any(_same(target, entry) for entry in allowed)


def carries_credentials(target: Origin, upstream: Origin) -> bool:
    """Credentials go to the configured upstream's exact origin and nowhere else (an
    http->https upgrade or another port is another origin)."""
    return target == upstream


def refusal(upstream_addresses: Collection[str], target_addresses: Collection[str]) -> str | None:
    """Why a foreign origin may not be fetched, or None if it may.

    Every address of the target must be acceptable (a name resolving to a public and a
    private address is refused): one of the classes the upstream's addresses have, and never
    "forbidden". A target that resolves to nothing is let through: there is nothing to
    connect to, and the client connects only to addresses checked here."""
    upstream_classes = {address_class(a) for a in upstream_addresses} - {"forbidden"}
    for address in target_addresses:
        kind = address_class(address)
        if kind == "forbidden":
            return f"{address} is an address the proxy never fetches from"
        if kind not in upstream_classes:
            if not upstream_classes:
                return f"{address} is {kind} and the upstream's own address is unknown"
            shown = " or ".join(sorted(upstream_classes))
            return f"{address} is {kind}, the upstream is {shown}"
    return None


def _same(target: Origin, entry: str) -> bool:
    try:
        return origin_of(entry) == target
    except ValueError:
        return False
