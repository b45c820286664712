"""Name resolution and connection pinning for upstream requests.

The client checks a foreign origin's addresses (origins.refusal) and then connects to exactly
those addresses, never resolving the host a second time: `PinnedResolver` for aiohttp (the
production fetcher, transports.py), `PinnedBackend` for httpcore (the httpx fetcher). That
closes DNS rebinding (a name that answers a public address to the check and 169.254.169.254
to the connect). TLS still verifies the certificate against the host name: both libraries
pass the URL's name as SNI/server_hostname whatever address the socket was opened to.

The check travels from the client to the connection in a context variable: httpcore and
aiohttp (with its DNS cache off: its cache shares one lookup task between requests) connect
inside the request's own task, so the value set around `send` is the one the connection
sees, and concurrent requests never see each other's.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from ..rules.origins import normal_host

# (host, port) -> the addresses it resolves to; [] if it does not resolve.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

DNS_TTL = 60.0  # seconds a resolution is reused, so a busy path does not resolve per request
DNS_CACHE_MAX = 4096


async def system_resolve(host: str, port: int) -> list[str]:
    """getaddrinfo, as the connection would do it (so `2130706433` and `0x7f.1` come back as
    127.0.0.1); a name that does not resolve gives []."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class CachedResolver:
    """A resolver with a short memory. IP literals are answered without asking anyone."""

    def __init__(
        self,
        resolve: Resolver,
        timeout: float,
        ttl: float = DNS_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._timeout = timeout
        self._ttl = ttl
        self._clock = clock
        self._known: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}

    async def __call__(self, host: str, port: int) -> tuple[str, ...]:
        """Raises TimeoutError when resolution takes longer than the connect timeout."""
        try:
            return (str(ipaddress.ip_address(host)),)
        except ValueError:
            pass
        now = self._clock()
        known = self._known.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        addresses = tuple(await asyncio.wait_for(self._resolve(host, port), self._timeout))
        if len(self._known) >= DNS_CACHE_MAX:
            self._known = {k: v for k, v in self._known.items() if v[0] > now}
            if len(self._known) >= DNS_CACHE_MAX:
                self._known.clear()
        self._known[(host, port)] = (now + self._ttl, addresses)
        return addresses


@dataclass(frozen=True)
class Pin:
    """The addresses a request to host:port was checked against, and may connect to."""

    host: str
    port: int
    addresses: tuple[str, ...]


_PIN: contextvars.ContextVar[Pin | None] = contextvars.ContextVar("condaproxy_pin", default=None)


def pinned(pin: Pin | None) -> contextvars.Token[Pin | None]:
    """Pin connections made by this task until `unpin(token)`; None: a trusted origin,
    connected as usual."""
    return _PIN.set(pin)


def unpin(token: contextvars.Token[Pin | None]) -> None:
    _PIN.reset(token)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects a pinned request only to its checked addresses, in order."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pin = _PIN.get()
        if pin is None:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        if (normal_host(host), port) != (pin.host, pin.port):
            raise httpcore.ConnectError(f"connection to {host}:{port} was not checked")
        if not pin.addresses:
            raise httpcore.ConnectError(f"{host} does not resolve")
        failure: Exception | None = None
        for address in pin.addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for upstreams")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that uses PinnedBackend. httpx takes no
    network backend, so the pool it builds is replaced by an equal one that does."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(),
        )


class PinnedResolver(AbstractResolver):
    """aiohttp's name resolution: a pinned request gets exactly its checked addresses, in
    order, without a lookup; any other request the system's answer (getaddrinfo in a thread,
    per new connection, as httpcore does). The connector must run with use_dns_cache=False."""

    def __init__(self) -> None:
        self._system = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pin = _PIN.get()
        if pin is None:
            return await self._system.resolve(host, port, family)
        if (normal_host(host), port) != (pin.host, pin.port):
            raise OSError(f"connection to {host}:{port} was not checked")
        if not pin.addresses:
            raise OSError(f"{host} does not resolve")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in pin.addresses
        ]

    async def close(self) -> None:
        await self._system.close()


def environment_proxies() -> bool:
    """An egress proxy from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) resolves
    names itself: the proxy's connection cannot be pinned. httpx honours these (and
    NO_PROXY) when it builds its own transport, so the httpx fetcher does then."""
    return any(key in {"http", "https", "all"} for key in urllib.request.getproxies())
