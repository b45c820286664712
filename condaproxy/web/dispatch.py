"""The ASGI edge of channel files: every path checked by one rule, then either the proxy's own
routes (Starlette) or the engine.

Channel files are the hot path of every cache hit, so they skip Starlette's router and
middleware stack: plain ASGI in, the engine called, its typed result turned into a response,
errors translated here. A request goes to Starlette only when its first segment (after any
`/t/<token>/`) is one of paths.ROUTE_SEGMENTS, exactly: `healthz-mirror` is a channel. A path
that ends in `/` (the root, `/<channel>/`, `/<channel>/<subdir>/`) is a page for people
(pages.py): no channel file ends so."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from starlette.applications import Starlette

from ..cache.results import Asked
from ..cache.upstream import HOPS
from ..rules.auth import identify, presented_token, require
from ..rules.conditional import for_audience
from ..rules.cross_site import SAFE_METHODS, check_same_site
from ..rules.errors import MethodNotAllowed, ProxyError, disk_full, local_disk_answer
from ..rules.forwarded import networks, scope_base
from ..rules.loops import (
    HOPS_HEADER,
    Chain,
    LoopDetected,
    UpstreamLoop,
    check_hop,
    extended,
    parse_chain,
)
from ..rules.paths import is_own_route, page_target, raw_path_of, split_raw_path, split_token
from ..rules.peer_auth import HEADER as PEER_HEADER
from ..rules.peer_auth import verify
from ..rules.routing import ResourcePath, UnknownChannel, parse_segments, unknown_channel
from ..settings import PEER_TOKEN, Settings, TokenSettings
from .pages import StatusPages
from .responses import respond
from .services import Services

log = structlog.get_logger("condaproxy.web.dispatch")


class ChannelDispatch:
    def __init__(
        self,
        app: Starlette,
        settings: Settings,
        services: Callable[[], Services],
        error_response: Callable[[ProxyError], Any],
        pages: StatusPages | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.services = services
        self.error_response = error_response
        self.pages = pages
        self.trusted = networks(settings.server.trusted_proxies)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        headers: dict[str, str] = {}
        chain: Chain = ()
        reset = None
        try:
            raw = raw_path_of(scope)
            page = page_target(raw) if self.pages is not None else None
            if page is not None and self.pages is not None:
                state["kind"] = "page"
                headers = _headers(scope)
                response = await self.pages.respond(scope, headers, *page)
                await response(scope, receive, send)
                return
            if len(raw) > 1 and raw.endswith(b"/") and not raw.endswith(b"//"):
                # Not a page, so one of the proxy's own routes (`/healthz/`, `/api/cache/x/`):
                # the same route as without the slash. Channel files never end in `/`.
                raw = raw[:-1]
                scope = {**scope, "raw_path": raw, "path": scope["path"].removesuffix("/")}
            segments = split_raw_path(raw)
            path_token, rest = split_token(segments)
            if is_own_route(rest):
                if scope["method"] not in SAFE_METHODS:
                    self._refuse_cross_site(scope)
                inner = self._own_route(scope, raw, path_token, rest)
                await self.app(inner, receive, _uncached(send))
                return
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed(scope["method"])
            headers = _headers(scope)
            chain = parse_chain(headers.get(HOPS_HEADER))  # bounded; before anything else
            rp = self._parse(segments, chain)
            state["channel"], state["kind"] = rp.channel, rp.kind.value
            own = self.services().upstream.hop(rp.channel)
            check_hop(chain, own, rp.channel)  # a cycle: answered before anything
            reset = HOPS.set(
                extended(chain, own)
            )  # this task's context: the request's upstream calls
            private = self.settings.channels[rp.channel].private
            if private:
                # Every path of a private channel, metadata included, needs a read token.
                token = presented_token(headers, rp.token)
                who = identify(token, self.settings.tokens.values())
                if who is None and PEER_HEADER in headers:
                    who = self._peer(headers[PEER_HEADER], rp.key)
                    token = token or ""
                require(who, token is not None, rp.channel, "read")
            result = await self.services().proxy.serve(rp, Asked(headers, scope["method"]))
            state["outcome"] = result.outcome
            result.cache_control = for_audience(result.cache_control, private)
            response = respond(result, headers, scope["method"])
        except UnknownChannel as exc:
            response = self.error_response(self._unknown_for_caller(exc, headers))
        except ProxyError as exc:
            state["error"] = exc.message
            if isinstance(exc, UpstreamLoop) and chain:
                exc = LoopDetected(exc.message)  # to a proxy: so it names the loop too
            response = self.error_response(exc)
        except OSError as exc:
            # The cache's disk or index failed under this answer: a 503 to retry, not a 500.
            answer = local_disk_answer(exc)
            if not disk_full(exc):
                log.error("cache disk failure", error=f"{type(exc).__name__}: {exc}"[:300])
            state["error"] = answer.message
            response = self.error_response(answer)
        try:
            await response(scope, receive, send)
        finally:
            if reset is not None:
                HOPS.reset(reset)

    def _parse(self, segments: list[str], chain: Chain) -> ResourcePath:
        """The channel request; a request that passed this proxy and now names none of its
        channels came back to it through an upstream that is the proxy's bare address."""
        try:
            return parse_segments(segments, self.settings.channels)
        except UnknownChannel:
            upstream = self.services().upstream
            if chain and any(upstream.hop(name) in chain for name in self.settings.channels):
                raise LoopDetected(
                    "this request already passed this proxy and names none of its channels: "
                    "an upstream is the proxy's own address (a loop)"
                ) from None
            raise

    def _peer(self, signed: str, key: str) -> TokenSettings | None:
        """Another replica, if it signed this file's key with the shared peer token."""
        peer = self.settings.tokens.get(PEER_TOKEN)
        if peer is not None and verify(signed, peer.token.value, key, time.time()):
            return peer
        return None

    @staticmethod
    def _own_route(
        scope: dict[str, Any], raw: bytes, path_token: str | None, rest: list[str]
    ) -> dict[str, Any]:
        """The scope Starlette sees: `/t/<token>/api/...` is the API with the token in the path
        (anaconda.org style), handed over in the request state."""
        if path_token is None:
            return scope
        state = scope.setdefault("state", {})
        state["path_token"] = path_token
        inner_raw = b"/" + b"/".join(raw.split(b"/")[3:])
        return {**scope, "path": "/" + "/".join(rest), "raw_path": inner_raw, "state": state}

    def _refuse_cross_site(self, scope: dict[str, Any]) -> None:
        """A browser's state-changing request made by another site's page (rules/cross_site):
        refused before any handler, so ambient basic-auth credentials act for nobody."""
        headers = _headers(scope)
        base = scope_base(scope, headers, self.trusted, self.settings.server.external_url)
        check_same_site(scope["method"], headers, base)

    def _unknown_for_caller(self, exc: UnknownChannel, headers: dict[str, str]) -> UnknownChannel:
        token = presented_token(headers, exc.token)
        who = identify(token, self.settings.tokens.values())
        return unknown_channel(exc.message, self.settings.channels, who)


def _uncached(send: Any) -> Any:
    """The API's answers depend on the token a request carries, and `X-API-Key` is not a
    header shared caches know to key on or to keep out of (RFC 9111 section 3.5 names only
    Authorization): `no-store` unless the route chose otherwise (the stylesheet)."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
        await send(message)

    return sending


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    """The request's fields by name. A field sent on several lines is one list, its lines
    joined by commas (RFC 9110 §5.3): `Accept-Encoding: zstd;q=0` and `Accept-Encoding: *`
    still refuse zstd, and an `If-None-Match` on two lines matches either."""
    headers: dict[str, str] = {}
    for k, v in scope["headers"]:
        name, value = k.decode("latin-1"), v.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers
