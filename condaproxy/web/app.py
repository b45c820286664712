"""The app factory: routes, error translation, and a lifespan that builds the services.

No import-time state: `create_app(settings, transport=..., clock=...)` is all a test needs.
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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..cache.instruments import Metrics
from ..cache.upstream import Resolver, system_resolve
from ..rules.errors import ProxyError, disk_full, local_disk_answer
from ..rules.forwarded import networks
from ..rules.redact import Redactor
from ..settings import Settings
from .cache_api import cache_routes
from .dispatch import ChannelDispatch
from .health import health_routes
from .logs import INTERNAL_ERROR, AccessLog
from .openapi import document
from .pages import StatusPages, static_routes
from .policy_api import policy_routes
from .services import DOWNLOADS_DRAIN, Services, build_services
from .uploads_api import uploads_routes

log = structlog.get_logger("condaproxy.web.app")


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    resolver: Resolver = system_resolve,
) -> Any:
    redact = Redactor(settings.secrets())
    metrics = Metrics()
    trusted = networks(settings.server.trusted_proxies)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = await build_services(
            settings, metrics=metrics, clock=clock, transport=transport, resolver=resolver
        )
        app.state.services.start_warm_up()
        pages.start(app.state.services)
        try:
            yield
        finally:
            await pages.stop()
            await app.state.services.aclose(min(settings.server.shutdown_timeout, DOWNLOADS_DRAIN))
            log.info("stopped", reason="shutdown complete")

    def services() -> Services:
        built: Services = app.state.services
        return built

    def error_response(exc: ProxyError) -> JSONResponse:
        body = {k: redact(v) if isinstance(v, str) else v for k, v in exc.body().items()}
        # An error may list what this caller's token may read (an unknown channel's 404).
        headers = {"cache-control": "no-store", **exc.headers}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    async def proxy_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProxyError)
        request.state.error = exc.message
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        request.state.error = str(exc.detail)
        # Starlette's own answers keep their headers: a 405's `Allow` (RFC 9110 15.5.6).
        return JSONResponse(
            {"error": exc.detail, "status": exc.status_code},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def os_error(request: Request, exc: Exception) -> JSONResponse:
        # The cache's disk or index failed (full, locked, I/O error): a 503 to retry.
        assert isinstance(exc, OSError)
        if not disk_full(exc):
            log.error("cache disk failure", error=f"{type(exc).__name__}: {exc}"[:300])
        return await proxy_error(request, local_disk_answer(exc))

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette answers an unexpected exception in a route before AccessLog sees it: the
        # same JSON 500 as everywhere else (AccessLog still logs the one error event).
        return Response(INTERNAL_ERROR, status_code=500, media_type="application/json")

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document(__version__))

    pages = StatusPages(settings, services, metrics, trusted, clock)
    app = Starlette(
        routes=[
            Route("/openapi.json", openapi, methods=["GET"]),
            *static_routes(),
            *health_routes(settings, metrics, lambda: getattr(app.state, "services", None)),
            *uploads_routes(settings, services),
            *cache_routes(settings, services),
            *policy_routes(settings, services),
        ],
        lifespan=lifespan,
        exception_handlers={
            ProxyError: proxy_error,
            HTTPException: http_error,
            OSError: os_error,
            Exception: internal_error,
        },
    )
    # Never a redirect: Starlette's would send `/api/channels` to `/api/channels/` built from
    # the request's Host (an address the client chose) with an empty, non-JSON body, and the
    # edge takes the slash off again (dispatch.py), so it looped. A route the proxy lacks is
    # its JSON 404, with or without a trailing slash.
    app.router.redirect_slashes = False
    dispatch = ChannelDispatch(app, settings, services, error_response, pages)
    edge = AccessLog(dispatch, metrics, trusted)
    # Read by the server's connections (web/connection.py), in each worker process.
    edge.header_timeout = settings.server.header_timeout
    edge.send_timeout = settings.server.send_timeout
    return edge
