"""How one request goes on the wire: the two fetchers behind the upstream client, one interface.

- `AiohttpFetcher`, production with direct egress: aiohttp's C HTTP/1.1 parser, bodies read in
  pieces of up to 1 MiB out of a 1 MiB buffer. Measured on loopback against nginx (issue 10):
  httpx's pure-Python parsing reads a body at 430-570 MiB/s, aiohttp at 2.5-2.7 GiB/s; a
  profile of a cold miss spent 59 % of its samples reading the body through httpx.
- `HttpxFetcher`: when a test injects an httpx transport (respx), and when an egress proxy
  from the environment must be honoured (httpx reads HTTP(S)_PROXY, ALL_PROXY and NO_PROXY
  and builds its own proxy transports, as before; the proxy resolves names, nothing to pin).

Both: redirects are not followed (upstream.py follows them hop by hop, each checked), bodies
are not content-decoded (metadata.py decodes, bounded; packages pass through as sent), no
credentials of their own (no netrc, no URL userinfo: upstream.py strips it), a pinned
request connects only to its checked addresses (egress.py), and every library exception
becomes UpstreamTimeout (504) or UpstreamError (502) naming the masked URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import httpx
import yarl

from ..rules.errors import UpstreamError, UpstreamTimeout
from ..rules.origins import normal_host, origin_of
from ..rules.pace import MIN_RATE, Pace, head_deadline
from ..settings import UpstreamSettings
from .egress import PinnedResolver, PinnedTransport, environment_proxies

CHUNK = 1 << 20  # the largest piece of a body handed on at once
USER_AGENT = "condaproxy/0.1"
MAX_CONNECTIONS = 256
MAX_KEEPALIVE = 64  # httpx only: aiohttp keeps idle connections for its keepalive_timeout
KEEPALIVE = 5.0  # seconds an idle connection is kept (both libraries' default)
HEAD_LINE = 16 * 1024  # the longest status line or header field accepted


class Reply(Protocol):
    """A response whose head has arrived; the body is read with `raw()`, once."""

    status: int
    headers: Mapping[str, str]  # case-insensitive

    def raw(self) -> AsyncIterator[bytes]:
        """The body as sent (no content decoding); broken, truncated or stalled raises
        UpstreamError / UpstreamTimeout."""
        ...

    async def aclose(self) -> None: ...


class Fetcher(Protocol):
    async def send(
        self, method: str, url: httpx.URL, headers: Mapping[str, str], shown: str
    ) -> Reply:
        """One request, no redirect followed. `shown` is the masked URL errors name."""
        ...

    async def aclose(self) -> None: ...


def production_fetcher(settings: UpstreamSettings) -> Fetcher:
    """aiohttp for direct egress; httpx when the environment names an egress proxy."""
    if environment_proxies():
        return HttpxFetcher(settings)
    return AiohttpFetcher(settings)


def cannot_connect(shown: str, exc: BaseException) -> UpstreamError:
    return UpstreamError(shown, f"{type(exc).__name__}: cannot connect")


def broken_off(shown: str, exc: BaseException) -> UpstreamError:
    return UpstreamError(shown, f"body broken off: {type(exc).__name__}")


def stalled(shown: str) -> UpstreamTimeout:
    return UpstreamTimeout(shown, "timed out while reading the body")


async def paced(chunks: AsyncGenerator[bytes], window: float, shown: str) -> AsyncIterator[bytes]:
    """`chunks`, cut with UpstreamTimeout once the body falls below the minimum pace
    (rules/pace.py): a trickle of bytes, each inside the read timeout, is no body. Only the
    time spent waiting for the upstream counts, not the time the reader took between pieces
    (a download held back by its slowest client on a full disk is not the upstream's pace),
    and the pace is kept from the first piece on: the wait for it (an upstream that makes the
    body before it sends it) is the read timeout's alone."""
    waited = 0.0
    pace: Pace | None = None
    async with contextlib.aclosing(chunks):
        while True:
            asked = time.monotonic()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            waited += time.monotonic() - asked
            if pace is None:
                pace = Pace(window, waited)
            if pace.too_slow(len(chunk), waited):
                raise UpstreamTimeout(
                    shown,
                    f"the body arrives slower than {MIN_RATE} bytes/s (upstream.read_timeout)",
                )
            yield chunk


class AiohttpFetcher:
    """One aiohttp session, made on first use inside the running loop (aiohttp binds its
    connector to it)."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,  # a free pool slot, then the connection
            sock_connect=settings.connect_timeout,  # TCP and TLS handshake
            sock_read=settings.read_timeout,  # each wait for the head or a piece of body
        )
        self._window = settings.read_timeout  # and the pace a body must keep (paced)
        self._head = head_deadline(settings.connect_timeout, settings.read_timeout)
        # Made here, at startup: loading the CAs takes tens of milliseconds, which a first
        # request (a cold miss) would otherwise wait for on the event loop.
        self._ssl = httpx.create_ssl_context()  # the CAs httpx would trust
        self._session: aiohttp.ClientSession | None = None

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS,
                keepalive_timeout=KEEPALIVE,
                use_dns_cache=False,  # the cache would share one lookup between pins
                resolver=PinnedResolver(),
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"user-agent": USER_AGENT},
                auto_decompress=False,
                trust_env=False,  # no proxy (production_fetcher), no netrc
                read_bufsize=CHUNK,
                # h11 (httpx) allowed a 16 KiB head; aiohttp's default is 8 KiB a line, and a
                # presigned redirect URL can be long.
                max_line_size=HEAD_LINE,
                max_field_size=HEAD_LINE,
            )
        return self._session

    async def send(
        self, method: str, url: httpx.URL, headers: Mapping[str, str], shown: str
    ) -> Reply:
        # The origin rules read URLs with httpx: refuse a URL yarl would read otherwise (or
        # cannot read at all: yarl raises ValueError where httpx parsed).
        try:
            target = yarl.URL(str(url), encoded=True)
            origin = origin_of(url)
            seen = (target.scheme, normal_host(target.raw_host or ""), target.port)
        except ValueError:
            raise UpstreamError(shown, "not a usable URL") from None
        if seen != tuple(origin):
            raise UpstreamError(shown, "not a usable URL")
        try:
            async with asyncio.timeout(self._head):
                response = await self._opened().request(
                    method, target, headers=dict(headers), allow_redirects=False
                )
        except TimeoutError:
            raise UpstreamTimeout(shown, "timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise cannot_connect(shown, exc) from None
        return AiohttpReply(response, shown, self._window)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AiohttpReply:
    def __init__(self, response: aiohttp.ClientResponse, shown: str, window: float) -> None:
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self._response, self._shown, self._window = response, shown, window

    def raw(self) -> AsyncIterator[bytes]:
        return paced(self._pieces(), self._window, self._shown)

    async def _pieces(self) -> AsyncGenerator[bytes]:
        content = self._response.content
        try:
            while chunk := await content.read(CHUNK):  # what is buffered, up to CHUNK
                yield chunk
        except TimeoutError:
            raise stalled(self._shown) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise broken_off(self._shown, exc) from None

    async def aclose(self) -> None:
        # Back to the pool if the body was read to its end; closed otherwise.
        self._response.release()


class HttpxFetcher:
    def __init__(
        self, settings: UpstreamSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        self._window = settings.read_timeout
        self._head = head_deadline(settings.connect_timeout, settings.read_timeout)
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE,
            keepalive_expiry=KEEPALIVE,
        )
        if transport is None and not environment_proxies():
            transport = PinnedTransport(limits)  # connect only to addresses checked here
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": USER_AGENT},
            limits=limits,
        )

    async def send(
        self, method: str, url: httpx.URL, headers: Mapping[str, str], shown: str
    ) -> Reply:
        request = self._client.build_request(method, url, headers=headers)
        try:
            async with asyncio.timeout(self._head):
                response = await self._client.send(request, stream=True, auth=None)
        except (httpx.TimeoutException, TimeoutError):
            raise UpstreamTimeout(shown, "timed out") from None
        except httpx.HTTPError as exc:
            raise cannot_connect(shown, exc) from None
        return HttpxReply(response, shown, self._window)

    async def aclose(self) -> None:
        await self._client.aclose()


class HttpxReply:
    def __init__(self, response: httpx.Response, shown: str, window: float) -> None:
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self._response, self._shown, self._window = response, shown, window

    def raw(self) -> AsyncIterator[bytes]:
        return paced(self._pieces(), self._window, self._shown)

    async def _pieces(self) -> AsyncGenerator[bytes]:
        try:
            async for chunk in self._response.aiter_raw(CHUNK):
                yield chunk
        except httpx.TimeoutException:
            raise stalled(self._shown) from None
        except httpx.HTTPError as exc:
            raise broken_off(self._shown, exc) from None

    async def aclose(self) -> None:
        await self._response.aclose()
