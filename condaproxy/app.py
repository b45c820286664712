"""The app factory: routes, error translation and a lifespan that builds everything.

No import-time state: `create_app(settings, transport=...)` is all a test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .admin import CacheAdmin
from .api import admin_routes, api_routes
from .auth import has_role, identify, presented_token, require
from .downloads import Downloads
from .errors import MethodNotAllowed, ProxyError
from .eviction import Evictor
from .forwarded import networks
from .index import Index
from .locks import KeyedLocks
from .logs import AccessLog
from .metadata import MetadataCache
from .metrics import Metrics
from .overlay import Overlay
from .paths import is_own_route, raw_path_of, split_raw_path, split_token
from .prefetch import Prefetcher
from .publish import Publisher
from .redact import Redactor
from .routing import UnknownChannel, parse_segments, unknown_channel
from .service import Asked, Proxy
from .settings import Settings
from .store import BlobStore, sweep_temp_files
from .uploads import UploadStore
from .upstream import Resolver, UpstreamClient, system_resolve
from .workers import Workers

log = structlog.get_logger("condaproxy.app")


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    resolver: Resolver = system_resolve,
) -> Any:
    redact = Redactor(settings.secrets())
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        root = settings.cache.path
        tmp = root / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        swept = sweep_temp_files(tmp)
        index = Index(root / "index")
        locks = KeyedLocks(root / "locks")
        store = BlobStore(root / "blobs", tmp)
        uploads = UploadStore(root / "uploads", tmp, locks, clock)
        orphans = uploads.sweep_orphans()
        upstream = UpstreamClient(settings.upstream, redact, transport, metrics, resolver)
        workers = Workers()
        meta = MetadataCache(
            index,
            locks,
            root / "meta",
            tmp,
            upstream,
            settings.cache.repodata_ttl,
            settings.cache.negative_ttl,
            workers,
            clock,
            metrics,
            settings.cache.max_repodata_size,
        )
        metrics.store_max_bytes.set(settings.cache.max_size)
        evictor = Evictor(
            index, store, locks, metrics, settings.cache.max_size, settings.cache.min_free
        )
        await evictor.run_once()
        evictor.start()
        downloads = Downloads(
            index,
            store,
            locks,
            upstream,
            root / "inflight",
            settings.cache.negative_ttl,
            clock,
            evictor,
        )
        overlay = Overlay(meta, index, store, tmp, workers)
        app.state.proxy = Proxy(
            settings.channels,
            index,
            store,
            meta,
            downloads,
            upstream,
            settings.cache.repodata_ttl,
            uploads,
            overlay,
            evictor,
            clock,
        )
        app.state.publisher = Publisher(settings.channels, uploads, store, settings.uploads)
        app.state.uploads = uploads
        app.state.evictor = evictor
        app.state.admin = CacheAdmin(settings.channels, index, store, meta)
        async with locks.hold("reconcile-upstreams"):
            changed = await asyncio.to_thread(app.state.admin.forget_changed_upstreams)
        for name, old in changed.items():
            log.warning(
                "channel upstream changed: cache of the old upstream dropped",
                channel=name,
                old_upstream=redact(old),
                upstream=redact(settings.channels[name].upstream or "(none)"),
            )
        proxy: Proxy = app.state.proxy
        app.state.prefetcher = Prefetcher(
            index,
            proxy.repodata_path,
            proxy.warm,
            lambda channel: f"http://condaproxy.invalid/{channel}",
            clock,
        )
        log.info(
            "started",
            config=settings.source,
            cache=str(root),
            swept_temp_files=swept,
            swept_orphan_uploads=orphans,
            channels=sorted(settings.channels),
        )
        try:
            yield
        finally:
            await app.state.prefetcher.aclose()
            await downloads.aclose()  # running downloads finish and are kept
            await evictor.stop()
            await upstream.aclose()
            workers.close()
            uploads.close()
            index.close()
            log.info("stopped", reason="shutdown complete")

    async def healthz(request: Request) -> JSONResponse:
        """The process is alive and serving."""
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        """Ready while the proxy can serve: hits, and misses passed through. A full or low
        disk only stops caching (reported as `caching: false` with the reason); it must not
        take the pod out of its Service."""
        problems = []
        evictor: Evictor | None = getattr(request.app.state, "evictor", None)
        if evictor is None:
            problems.append("not started")
        if not settings.cache.path.is_dir():
            problems.append(f"cache directory {settings.cache.path} is missing")
        body: dict[str, Any] = {"status": "unavailable" if problems else "ok", "problems": problems}
        free = shutil.disk_usage(settings.cache.path).free if not problems else 0
        caching, why = evictor is not None and evictor.has_room(0), "below min_free"
        if caching:
            try:
                probe = settings.cache.path / "tmp" / f".ready-{os.getpid()}"
                probe.write_bytes(b"ok")
                probe.unlink()
            except OSError as exc:
                caching, why = False, f"cache not writable: {exc.strerror or exc}"
        body.update({"free_disk": free, "min_free": settings.cache.min_free, "caching": caching})
        if not caching:
            body["caching_off_because"] = why
        return JSONResponse(body, status_code=503 if problems else 200)

    async def metrics_endpoint(request: Request) -> Response:
        """Private channel names are shown only to a scrape with the metrics token (or an
        admin token), as a Bearer header; anonymous scrapers see them folded into one label."""
        token = presented_token(request.headers, request.scope["state"].get("path_token"))
        metrics_token = settings.metrics.token
        full = token is not None and (
            (metrics_token is not None and hmac.compare_digest(token, metrics_token.value))
            or has_role(identify(token, settings.tokens.values()), "*", "admin")
        )
        hidden = set() if full else {n for n, c in settings.channels.items() if c.private}
        data, content_type = metrics.exposition(hidden)
        return Response(data, media_type=content_type)

    def error_response(exc: ProxyError) -> JSONResponse:
        body = {k: redact(v) if isinstance(v, str) else v for k, v in exc.body().items()}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    async def proxy_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProxyError)
        request.state.error = exc.message
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        request.state.error = str(exc.detail)
        return JSONResponse(
            {"error": exc.detail, "status": exc.status_code}, status_code=exc.status_code
        )

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *api_routes(settings, lambda: (app.state.publisher, app.state.uploads)),
            *admin_routes(settings, lambda: (app.state.admin, metrics, app.state.prefetcher)),
        ],
        lifespan=lifespan,
        exception_handlers={ProxyError: proxy_error, HTTPException: http_error},
    )
    trusted = networks(settings.server.trusted_proxies)
    return AccessLog(ChannelDispatch(app, settings, error_response), metrics, trusted)


class _State:
    """Attribute access over the request's state dict (what the access log reads)."""

    _data: dict[str, Any]

    def __init__(self, data: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", data)

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value


class ChannelDispatch:
    """Channel files are the hot path of every cache hit, so they skip Starlette's router and
    middleware stack: plain ASGI in, the core called, errors translated here. Everything else
    (health, the API) is the Starlette app.

    Every path, whichever side serves it, is first split and checked by paths.split_raw_path
    (one rule). A request goes to Starlette only when its first segment (after any
    `/t/<token>/`) is one of paths.ROUTE_SEGMENTS, exactly: `healthz-mirror` is a channel."""

    def __init__(
        self, app: Starlette, settings: Settings, error_response: Callable[[ProxyError], Any]
    ) -> None:
        self.app = app
        self.settings = settings
        self.error_response = error_response

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _State(scope.setdefault("state", {}))
        headers: dict[str, str] = {}
        try:
            raw = raw_path_of(scope)
            segments = split_raw_path(raw)
            path_token, rest = split_token(segments)
            if is_own_route(rest):
                await self.app(self._own_route(scope, raw, path_token, rest), receive, send)
                return
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{scope['method']} is not allowed here; use GET or HEAD")
            proxy: Proxy = self.app.state.proxy
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            rp = parse_segments(segments, proxy.channels)
            state.channel = rp.channel
            state.kind = rp.kind.value
            if proxy.channels[rp.channel].private:
                # Every path of a private channel, metadata included, needs a read token.
                token = presented_token(headers, rp.token)
                who = identify(token, self.settings.tokens.values())
                require(who, token is not None, rp.channel, "read")
            response = await proxy.serve(rp, Asked(headers, scope["method"], state))
        except UnknownChannel as exc:
            response = self.error_response(self._unknown_for_caller(exc, headers))
        except ProxyError as exc:
            state.error = exc.message
            response = self.error_response(exc)
        await response(scope, receive, send)

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

    def _unknown_for_caller(self, exc: UnknownChannel, headers: dict[str, str]) -> UnknownChannel:
        token = presented_token(headers, exc.token)
        who = identify(token, self.settings.tokens.values())
        return unknown_channel(exc.message, self.settings.channels, who)
