"""The upstream HTTP client: httpx at the edge, domain exceptions out. No httpx exception
escapes this module, and no credential reaches an error message."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from ..rules.errors import UpstreamError, UpstreamNotFound, UpstreamTimeout
from ..rules.origins import Origin, carries_credentials, origin_of, refusal, trusted
from ..rules.redact import Redactor
from ..settings import ChannelSettings, UpstreamSettings
from .egress import (
    CachedResolver,
    Pin,
    PinnedTransport,
    Resolver,
    environment_proxies,
    pinned,
    system_resolve,
    unpin,
)
from .instruments import Metrics

CHUNK = 1 << 20
USER_AGENT = "condaproxy/0.1"
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})

log = structlog.get_logger("condaproxy.cache.upstream")


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    url: str  # masked, for messages
    _response: httpx.Response

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value and value.isdigit() else None

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as sent (no content decoding); broken or truncated raises UpstreamError."""
        async for chunk in self._guard(self._response.aiter_raw(CHUNK)):
            yield chunk

    async def _guard(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except httpx.TimeoutException:
            raise UpstreamTimeout(self.url, "timed out while reading the body") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(self.url, f"body broken off: {type(exc).__name__}") from None


class OriginRefused(UpstreamError):
    """A request the origin rules (origins.py) do not allow; nothing was sent."""


class UpstreamClient:
    """Every request to an upstream goes through `open`, hop by hop: each redirect target is
    checked like the first URL, and credentials are attached per hop, only for the channel's
    own upstream origin."""

    def __init__(
        self,
        settings: UpstreamSettings,
        redact: Redactor,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
        resolver: Resolver = system_resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        if transport is None and not environment_proxies():
            transport = PinnedTransport(limits)  # connect only to addresses checked here
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,  # followed in `_follow`, each hop checked
            transport=transport,
            headers={"user-agent": USER_AGENT},
            limits=limits,
        )
        self._resolve = CachedResolver(resolver, settings.connect_timeout, clock=clock)
        self.redact = redact

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    def url_for(channel: ChannelSettings, relative: str) -> str:
        """The upstream URL of a file below the channel, with an anaconda.org path token."""
        return join_url(channel_base(channel), relative)

    @contextlib.asynccontextmanager
    async def open(
        self,
        channel: ChannelSettings,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request; yield the response for 2xx/304, raise the domain error otherwise."""
        shown = self.redact(url)
        started = time.perf_counter()
        try:
            response = await self._follow(channel, url, method, headers or {}, shown)
        except UpstreamError:
            self._failed(channel)
            raise
        if self.metrics is not None:
            self.metrics.upstream_latency.labels(channel.name).observe(
                time.perf_counter() - started
            )
        try:
            if response.status_code in (404, 410):
                raise UpstreamNotFound(shown)
            if response.status_code != 304 and not 200 <= response.status_code < 300:
                self._failed(channel)
                raise UpstreamError(shown, f"HTTP {response.status_code}")
            yield UpstreamResponse(response.status_code, response.headers, shown, response)
        finally:
            await response.aclose()

    async def _follow(
        self,
        channel: ChannelSettings,
        url: str,
        method: str,
        headers: Mapping[str, str],
        shown: str,
    ) -> httpx.Response:
        """Follow redirects (RFC 9110 §15.4) ourselves, at most MAX_REDIRECTS of them, each
        hop checked and credentialed on its own."""
        try:
            hop = httpx.URL(url)
        except httpx.InvalidURL:
            raise UpstreamError(shown, "not a usable URL") from None
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._hop(channel, hop, method, headers, shown)
            location = response.headers.get("location")
            if response.status_code not in REDIRECTS or not location:
                return response
            await response.aclose()
            try:
                hop = hop.join(location).copy_with(fragment=None)
            except httpx.InvalidURL:
                raise UpstreamError(shown, "redirected to an invalid URL") from None
            if response.status_code == 303 and method != "HEAD":
                method = "GET"
        raise UpstreamError(shown, f"more than {MAX_REDIRECTS} redirects")

    async def _hop(
        self,
        channel: ChannelSettings,
        url: httpx.URL,
        method: str,
        headers: Mapping[str, str],
        shown: str,
    ) -> httpx.Response:
        """One request, to an origin the rules allow, with credentials only for the
        upstream's own origin. URL userinfo is never sent as such: credentials come from
        the channel's configuration."""
        upstream = origin_of(channel_base(channel))
        try:
            target = origin_of(url)
        except ValueError as exc:
            self._refuse(channel, shown, "a URL", str(exc))
        pin = await self._admit(channel, upstream, target, url, shown)
        sent = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        if carries_credentials(target, upstream):
            sent.update(credentials(channel))
        request = self._client.build_request(
            method, url.copy_with(username=None, password=None), headers=sent
        )
        token = pinned(pin)
        try:
            return await self._client.send(request, stream=True, auth=None)
        except httpx.TimeoutException:
            raise UpstreamTimeout(shown, "timed out") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(shown, f"{type(exc).__name__}: cannot connect") from None
        finally:
            unpin(token)

    async def _admit(
        self,
        channel: ChannelSettings,
        upstream: Origin,
        target: Origin,
        url: httpx.URL,
        shown: str,
    ) -> Pin | None:
        """None for a trusted origin; the checked addresses for a foreign one; raises
        OriginRefused for anything else."""
        if target != upstream and any(s in str(url) for s in channel.secrets() if len(s) >= 8):
            self._refuse(channel, shown, str(target), "the URL holds the channel's credential")
        if trusted(target, upstream, channel.allowed_origins):
            return None
        try:
            ours = await self._resolve(upstream.host, upstream.port)
            theirs = await self._resolve(target.host, target.port)
        except TimeoutError:
            raise UpstreamTimeout(shown, f"resolving {target.host} timed out") from None
        why = refusal(ours, theirs)
        if why is not None:
            self._refuse(channel, shown, str(target), why)
        return Pin(target.host, target.port, theirs)

    def _refuse(self, channel: ChannelSettings, shown: str, what: str, why: str) -> NoReturn:
        where, why = self.redact(what), self.redact(why)
        log.warning("upstream origin refused", channel=channel.name, origin=where, reason=why)
        hint = "the channel's allowed_origins can allow it"
        raise OriginRefused(shown, f"refused to fetch from {where}: {why} ({hint})")

    def _failed(self, channel: ChannelSettings) -> None:
        if self.metrics is not None:
            self.metrics.upstream_errors.labels(channel.name).inc()


def credentials(channel: ChannelSettings) -> dict[str, str]:
    """The headers that authenticate to the channel's upstream: its bearer token, else basic
    auth from upstream_username/password or the upstream URL's userinfo."""
    if channel.upstream_bearer is not None:
        return {"authorization": f"Bearer {channel.upstream_bearer.value}"}
    user, password = channel.upstream_username, channel.upstream_password
    if user is not None:
        pair = f"{user}:{password.value if password else ''}"
    elif channel.upstream and (parsed := httpx.URL(channel.upstream)).userinfo:
        pair = f"{parsed.username}:{parsed.password}"
    else:
        return {}
    return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def channel_base(channel: ChannelSettings) -> str:
    if channel.upstream is None:
        raise ValueError(f"channel {channel.name} has no upstream")
    if channel.upstream_token is None:
        return channel.upstream
    parts = urlsplit(channel.upstream)
    path = f"/t/{channel.upstream_token.value}{parts.path}"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def join_url(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative.lstrip("/")
