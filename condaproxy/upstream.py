"""The upstream HTTP client: httpx at the edge, domain exceptions out. No httpx exception
escapes this module, and no credential reaches an error message."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from .errors import UpstreamError, UpstreamNotFound, UpstreamTimeout
from .metrics import Metrics
from .redact import Redactor
from .settings import ChannelSettings, UpstreamSettings

CHUNK = 1 << 20
USER_AGENT = "condaproxy/0.1"


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

    async def iter_decoded(self) -> AsyncIterator[bytes]:
        """The body with any Content-Encoding (gzip) undone."""
        async for chunk in self._guard(self._response.aiter_bytes(CHUNK)):
            yield chunk

    async def _guard(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except httpx.TimeoutException:
            raise UpstreamTimeout(self.url, "timed out while reading the body") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(self.url, f"body broken off: {type(exc).__name__}") from None


class UpstreamClient:
    def __init__(
        self,
        settings: UpstreamSettings,
        redact: Redactor,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=True,  # anaconda.org answers packages with a 302 to a presigned URL
            transport=transport,
            headers={"user-agent": USER_AGENT},
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
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
        request_headers = dict(headers or {})
        auth: httpx.Auth | None = None
        if channel.upstream_bearer is not None:
            request_headers["authorization"] = f"Bearer {channel.upstream_bearer.value}"
        elif channel.upstream_username is not None:
            password = channel.upstream_password.value if channel.upstream_password else ""
            auth = httpx.BasicAuth(channel.upstream_username, password)
        started = time.perf_counter()
        try:
            request = self._client.build_request(method, url, headers=request_headers)
            response = await self._client.send(request, stream=True, auth=auth)
        except httpx.TimeoutException:
            self._failed(channel)
            raise UpstreamTimeout(shown, "timed out") from None
        except httpx.HTTPError as exc:
            self._failed(channel)
            raise UpstreamError(shown, f"{type(exc).__name__}: cannot connect") from None
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

    def _failed(self, channel: ChannelSettings) -> None:
        if self.metrics is not None:
            self.metrics.upstream_errors.labels(channel.name).inc()


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
