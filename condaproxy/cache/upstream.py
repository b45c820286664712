"""The upstream client: redirects, credentials and origin checks above a fetcher
(transports.py: aiohttp in production, httpx under tests and behind an egress proxy). Domain
exceptions out, no library exception escapes, and no credential reaches an error message."""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from ..rules.codecs import Inflater, TooLarge, content_codings
from ..rules.conditional import retry_after_seconds, unusable_status
from ..rules.errors import (
    IntegrityError,
    UpstreamBusy,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRefused,
    UpstreamTimeout,
)
from ..rules.loops import (
    HOPS_HEADER,
    Chain,
    UpstreamLoop,
    extended,
    format_chain,
    refused_loop,
)
from ..rules.loops import (
    hop as hop_token,
)
from ..rules.numbers import header_number
from ..rules.origins import Origin, carries_credentials, origin_of, refusal, trusted
from ..rules.redact import Redactor, kept_url, used_url
from ..rules.rewrite import Origins
from ..settings import ChannelSettings, UpstreamSettings
from . import transports
from .egress import CachedResolver, Pin, Resolver, pinned, system_resolve, unpin
from .instruments import Metrics
from .transports import Fetcher, HttpxFetcher, Reply

MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A package whose record lists no size, decoded from a compressed transfer: at most this much.
MAX_DECODED = 1 << 34
BUSY = frozenset({429, 503})  # "not now": a 502 with its Retry-After (errors.UpstreamBusy)

log = structlog.get_logger("condaproxy.cache.upstream")
# The chain of hops (rules/loops.py) of the request being served, this proxy's own hop for the
# requested channel last; set by the edge for each channel request. Tasks copy the context
# when created, so a download a request starts sends that request's chain.
HOPS: contextvars.ContextVar[Chain] = contextvars.ContextVar("condaproxy_hops", default=())


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    url: str  # masked, for messages
    _reply: Reply

    @property
    def content_length(self) -> int | None:
        return header_number(self.headers.get("content-length"))

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as sent (no content decoding), in pieces of at most 1 MiB; broken
        or truncated raises UpstreamError, stalled UpstreamTimeout."""
        return self._reply.raw()


@dataclass
class Decoded:
    """An upstream response whose body came with a content coding (gzip, deflate) although the
    proxy asked for `identity`, read with the coding undone, as a client asking the upstream
    directly gets it (conda's requests and rattler's reqwest undo it): a package's checksum is
    of the package, not of its compressed transfer."""

    response: UpstreamResponse
    limit: int  # bytes the decoded body may have (the size the channel lists)
    coding: str  # the one coding to undo (gzip, x-gzip, deflate)
    content_length = None  # the header counted the compressed bytes
    from_bucket = False

    @property
    def url(self) -> str:
        return self.response.url

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        coding = self.coding
        try:
            inflater = Inflater(coding, self.limit)
            async for chunk in self.response.iter_bytes():
                for piece in inflater.feed(chunk):
                    yield piece
            inflater.end()
        except TooLarge as exc:
            raise IntegrityError(self.url, f"the {coding} body {exc}") from None
        except ValueError as exc:
            raise UpstreamError(self.url, f"Content-Encoding {coding}: {exc}") from None


class Capped:
    """An upstream body read never past `limit` bytes (the size the channel lists): the
    chunk that would pass it is an IntegrityError before any of it is handed on. A body
    framed without Content-Length (chunked, or ended by closing the connection) announces
    no size to compare before it starts, and every reader sends what the download has
    received but its last byte: a longer body went out as the listed size of the wrong
    bytes, a complete response, before its end was seen."""

    def __init__(self, response: Any, limit: int) -> None:
        self.response, self.limit = response, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.response, name)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self.response.iter_bytes():
            received += len(chunk)
            if received > self.limit:
                raise IntegrityError(
                    self.response.url,
                    f"the body runs past the {self.limit} bytes the channel lists",
                )
            yield chunk


def as_identity(response: Any, limit: int | None) -> Any:
    """`response` read without its content coding (Decoded), if the upstream put one on, and
    never past `limit` bytes (Capped) when the channel lists the size."""
    headers = getattr(response, "headers", None)
    codings = content_codings(headers.get("content-encoding") if headers is not None else None)
    if not codings:
        return response if limit is None else Capped(response, limit)
    coding = ", ".join(codings)
    if coding not in Inflater.CODINGS:  # known before any byte goes out: a clean 502
        raise UpstreamError(
            response.url, f"the body came with Content-Encoding {coding!r}, which is not undone"
        )
    return Decoded(response, MAX_DECODED if limit is None else limit, coding)


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
        *,
        fetcher: Fetcher | None = None,
        secret: str | None = None,
    ) -> None:
        """`transport` (tests: respx, a real upstream) puts httpx under the client; else
        `fetcher`, else the production fetcher. With `secret` (the proxy's, random), every
        request carries its chain of hops (rules/loops.py): the one the request being served
        came with (HOPS, set by the edge) and this channel's hop."""
        self.metrics = metrics
        self.secret = secret
        self._hops: dict[str, str] = {}  # channel name -> its hop token (configured names only)
        if transport is not None:
            fetcher = HttpxFetcher(settings, transport)
        self._fetcher = fetcher or transports.production_fetcher(settings)
        self._resolve = CachedResolver(resolver, settings.connect_timeout, clock=clock)
        self.redact = redact

    async def aclose(self) -> None:
        await self._fetcher.aclose()

    def hop(self, channel: str) -> str:
        """This proxy's opaque token for one of its channels (rules/loops.py); an HMAC, so
        made once per channel, not on every request."""
        token = self._hops.get(channel)
        if token is None:
            token = self._hops[channel] = hop_token(self.secret or "", channel)
        return token

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
        revalidating: bool = False,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request; yield the response for 2xx/304, raise the domain error otherwise.
        `revalidating`: the caller holds a copy a 304 would freshen (even when it has no
        validator to send), so a 304 is an answer to it."""
        shown = self.redact(url)
        started = time.perf_counter()
        if self.secret is not None:
            chain = extended(HOPS.get(), self.hop(channel.name))
            headers = {**(headers or {}), HOPS_HEADER: format_chain(chain)}
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
            if refused_loop(response.status, response.headers):
                self._failed(channel)
                raise UpstreamLoop(
                    shown,
                    f"channels.{channel.name}.upstream leads back to a channel this request "
                    "already passed (a loop through this proxy or another condaproxy)",
                )
            if response.status in (404, 410):
                raise UpstreamNotFound(shown)
            if response.status in BUSY:
                self._failed(channel)
                wait = retry_after_seconds(response.headers.get("retry-after"), time.time())
                raise UpstreamBusy(shown, f"HTTP {response.status}", wait)
            why = unusable_status(response.status, headers or {}, revalidating)
            if why is not None:
                self._failed(channel)
                if response.status >= 400:
                    raise UpstreamRefused(shown, why, response.status)
                raise UpstreamError(shown, why)
            yield UpstreamResponse(response.status, response.headers, shown, response)
        finally:
            await response.aclose()

    async def _follow(
        self,
        channel: ChannelSettings,
        url: str,
        method: str,
        headers: Mapping[str, str],
        shown: str,
    ) -> Reply:
        """Follow redirects (RFC 9110 §15.4) ourselves, at most MAX_REDIRECTS of them, each
        hop checked and credentialed on its own."""
        try:
            hop = httpx.URL(url)
        except httpx.InvalidURL:
            raise UpstreamError(shown, "not a usable URL") from None
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._hop(channel, hop, method, headers, shown)
            location = response.headers.get("location")
            if response.status not in REDIRECTS or not location:
                return response
            await response.aclose()
            try:
                hop = hop.join(location).copy_with(fragment=None)
            except httpx.InvalidURL:
                raise UpstreamError(shown, "redirected to an invalid URL") from None
            if response.status == 303 and method != "HEAD":
                method = "GET"
        raise UpstreamError(shown, f"more than {MAX_REDIRECTS} redirects")

    async def _hop(
        self,
        channel: ChannelSettings,
        url: httpx.URL,
        method: str,
        headers: Mapping[str, str],
        shown: str,
    ) -> Reply:
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
        bare = url.copy_with(username=None, password=None) if url.userinfo else url
        token = pinned(pin)
        try:
            return await self._fetcher.send(method, bare, sent, shown)
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
    elif channel.upstream and (pair_in_url := _userinfo_pair(channel.upstream)):
        pair = pair_in_url
    else:
        return {}
    return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


@functools.lru_cache(maxsize=64)
def _userinfo_pair(upstream: str) -> str | None:
    """`user:password` from a configured upstream URL's userinfo (parsed once per URL)."""
    parsed = httpx.URL(upstream)
    return f"{parsed.username}:{parsed.password}" if parsed.userinfo else None


def channel_base(channel: ChannelSettings) -> str:
    if channel.upstream is None:
        raise ValueError(f"channel {channel.name} has no upstream")
    if channel.upstream_token is None:
        return channel.upstream
    parts = urlsplit(channel.upstream)
    path = f"/t/{channel.upstream_token.value}{parts.path}"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def kept(channel: ChannelSettings, url: str | None) -> str | None:
    """`url` as the index keeps it, the channel's credentials out (rules/redact.kept_url)."""
    return kept_url(url, channel_base(channel)) if url and channel.upstream else url


def used(channel: ChannelSettings, url: str | None) -> str | None:
    """A URL the index kept, to fetch from, with the channel's credentials of the day."""
    return used_url(url, channel_base(channel)) if url and channel.upstream else url


def kept_origins(channel: ChannelSettings, origins: Origins) -> Origins:
    """Where a document says its files live, as the index keeps it (see `kept`)."""
    return Origins(kept(channel, origins.packages), kept(channel, origins.shards))


def join_url(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative.lstrip("/")
