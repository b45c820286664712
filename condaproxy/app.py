"""The app factory: routes, error translation and a lifespan that builds everything.

No import-time state: `create_app(settings, transport=...)` is all a test needs.
"""

from __future__ import annotations

import contextlib
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
from .auth import identify, presented_token, require
from .downloads import Downloads
from .errors import MethodNotAllowed, ProxyError
from .eviction import Evictor
from .index import Index
from .locks import KeyedLocks
from .logs import AccessLog
from .metadata import MetadataCache
from .metrics import Metrics
from .overlay import Overlay
from .prefetch import Prefetcher
from .publish import Publisher
from .redact import Redactor
from .routing import parse_path, split_token
from .service import Asked, Proxy
from .settings import Settings
from .store import BlobStore, sweep_temp_files
from .uploads import UploadStore
from .upstream import UpstreamClient
from .workers import Workers

log = structlog.get_logger("condaproxy.app")


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
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
        upstream = UpstreamClient(settings.upstream, redact, transport, metrics)
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
        )
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
        """Ready: config loaded, store writable. Low disk is reported, not fatal: the proxy
        still proxies, it only stops caching."""
        problems = []
        if getattr(request.app.state, "proxy", None) is None:
            problems.append("not started")
        try:
            probe = settings.cache.path / "tmp" / f".ready-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            problems.append(f"cache directory not writable: {exc.strerror}")
        free = shutil.disk_usage(settings.cache.path).free
        low_disk = free < settings.cache.min_free
        body = {
            "status": "ok" if not problems else "unavailable",
            "problems": problems,
            "free_disk": free,
            "caching": not low_disk,
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    async def metrics_endpoint(request: Request) -> Response:
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    def error_response(exc: ProxyError) -> JSONResponse:
        body = {k: redact(v) if isinstance(v, str) else v for k, v in exc.body().items()}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    async def proxy_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProxyError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
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
    return AccessLog(ChannelDispatch(app, settings, error_response), metrics)


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
    (health, the API) is the Starlette app."""

    RESERVED = ("/healthz", "/readyz", "/metrics", "/api/")

    def __init__(
        self, app: Starlette, settings: Settings, error_response: Callable[[ProxyError], Any]
    ) -> None:
        self.app = app
        self.settings = settings
        self.error_response = error_response

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.RESERVED):
            await self.app(scope, receive, send)
            return
        rest, path_token = split_token(scope["path"])
        if path_token is not None and ("/" + rest).startswith(self.RESERVED):
            # `/t/<token>/api/...`: the API with the token in the path (anaconda.org style).
            prefix = len(scope["path"]) - len(rest) - 1
            raw = scope.get("raw_path") or scope["path"].encode()
            state = scope.setdefault("state", {})
            state["path_token"] = path_token
            inner = {**scope, "path": "/" + rest, "raw_path": raw[prefix:], "state": state}
            await self.app(inner, receive, send)
            return
        state = _State(scope.setdefault("state", {}))
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{scope['method']} is not allowed here; use GET or HEAD")
            proxy: Proxy = self.app.state.proxy
            rp = parse_path(scope["path"], proxy.channels)
            state.channel = rp.channel
            state.kind = rp.kind.value
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if proxy.channels[rp.channel].private:
                # Every path of a private channel, metadata included, needs a read token.
                token = presented_token(headers, rp.token)
                who = identify(token, self.settings.tokens.values())
                require(who, token is not None, rp.channel, "read")
            response = await proxy.serve(rp, Asked(headers, scope["method"], state))
        except ProxyError as exc:
            response = self.error_response(exc)
        await response(scope, receive, send)
