"""/healthz, /readyz and /metrics: what orchestrators and scrapers ask."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..cache.instruments import Metrics
from ..ops.metrics import StoreSize, exposition
from ..rules.auth import has_role, identify, presented_token, same_secret
from ..settings import Settings
from .services import Services


def health_routes(
    settings: Settings, metrics: Metrics, services: Callable[[], Services | None]
) -> list[Route]:
    async def healthz(request: Request) -> JSONResponse:
        """The process is alive and serving."""
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        """Ready while the proxy can serve: hits, and misses passed through. A full or low
        disk only stops caching (reported as `caching: false` with the reason); it must not
        take the pod out of its Service."""
        problems = []
        built = services()
        if built is None:
            problems.append("not started")
        if not settings.cache.path.is_dir():
            problems.append(f"cache directory {settings.cache.path} is missing")
        body: dict[str, Any] = {"status": "unavailable" if problems else "ok", "problems": problems}
        free = shutil.disk_usage(settings.cache.path).free if not problems else 0
        caching, why = built is not None and built.evictor.has_room(0), "below min_free"
        index_problem = built.index.check() if built is not None else None
        if index_problem is not None:  # tried to replace it, and could not (yet)
            caching, why = False, index_problem
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
        if built is not None and built.cluster is not None:
            body.update(built.cluster.status())  # a shared store down still serves: 200
        return JSONResponse(body, status_code=503 if problems else 200)

    sizes: list[StoreSize] = []  # made at the first scrape, once the services are started

    async def metrics_endpoint(request: Request) -> Response:
        """Private channel names are shown only to a scrape with the metrics token (or an
        admin token), as a Bearer header; anonymous scrapers see them folded into one label."""
        token = presented_token(request.headers, request.scope["state"].get("path_token"))
        metrics_token = settings.metrics.token
        full = token is not None and (
            (metrics_token is not None and same_secret(token, metrics_token.value))
            or has_role(identify(token, settings.tokens.values()), "*", "admin")
        )
        hidden = set() if full else {n for n, c in settings.channels.items() if c.private}
        built = services()
        if built is not None:
            if not sizes:
                sizes.append(StoreSize(metrics, built.admin.usage, lambda: built.evictor.changes))
            await sizes[0].refresh()
        data, content_type = exposition(metrics, hidden)
        return Response(data, media_type=content_type)

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
