"""The app factory: routes, error translation and a lifespan that builds everything.

No import-time state: `create_app(settings, transport=...)` is all a test needs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .downloads import Downloads
from .errors import ProxyError
from .index import Index
from .locks import KeyedLocks
from .logs import AccessLog
from .metadata import MetadataCache
from .redact import Redactor
from .routing import parse_path
from .service import Proxy
from .settings import Settings
from .store import BlobStore, sweep_temp_files
from .upstream import UpstreamClient

log = structlog.get_logger("condaproxy.app")


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> Any:
    redact = Redactor(settings.secrets())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        root = settings.cache.path
        tmp = root / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        swept = sweep_temp_files(tmp)
        index = Index(root / "index")
        locks = KeyedLocks(root / "locks")
        store = BlobStore(root / "blobs", tmp)
        upstream = UpstreamClient(settings.upstream, redact, transport)
        meta = MetadataCache(
            index,
            locks,
            root / "meta",
            tmp,
            upstream,
            settings.cache.repodata_ttl,
            settings.cache.negative_ttl,
            clock,
        )
        downloads = Downloads(
            index, store, locks, upstream, root / "inflight", settings.cache.negative_ttl, clock
        )
        app.state.proxy = Proxy(
            settings.channels,
            index,
            store,
            meta,
            downloads,
            upstream,
            settings.cache.repodata_ttl,
            clock,
        )
        log.info(
            "started",
            config=settings.source,
            cache=str(root),
            swept_temp_files=swept,
            channels=sorted(settings.channels),
        )
        try:
            yield
        finally:
            await downloads.aclose()
            await upstream.aclose()
            index.close()

    async def channel_file(request: Request) -> Any:
        proxy: Proxy = request.app.state.proxy
        rp = parse_path(request.url.path, proxy.channels)
        request.state.channel = rp.channel
        return await proxy.serve(rp, request.headers, request.method, request.state)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def proxy_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProxyError)
        body = {k: redact(v) if isinstance(v, str) else v for k, v in exc.body().items()}
        return JSONResponse(body, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": exc.detail, "status": exc.status_code}, status_code=exc.status_code
        )

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/{path:path}", channel_file, methods=["GET", "HEAD"]),
        ],
        lifespan=lifespan,
        exception_handlers={ProxyError: proxy_error, HTTPException: http_error},
    )
    return AccessLog(app)
