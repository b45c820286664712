"""The upload API (Quetz-compatible) and package listing: parse, authorize, call, answer.

POST   /api/channels/<channel>/upload/<filename>?sha256=<hex>&force=<bool>   raw body
POST   /api/channels/<channel>/files                                         multipart `files`
GET    /api/channels/<channel>/packages
DELETE /api/channels/<channel>/packages/<subdir>/<filename>
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .admin import CacheAdmin, Scope, stats_for
from .auth import identify, presented_token, require
from .errors import BadRequest, NotFound
from .metrics import Metrics
from .prefetch import Prefetcher, parse_request
from .publish import Publisher, parse_bool
from .routing import channel_prefix
from .settings import Settings, TokenSettings
from .upload_api import upload_multipart, upload_raw
from .uploads import UploadStore

_UPLOAD = re.compile(r"^(?P<channel>.+)/upload/(?P<filename>[^/]+)$")
_FILES = re.compile(r"^(?P<channel>.+)/files$")
_LIST = re.compile(r"^(?P<channel>.+)/packages$")
_DELETE = re.compile(r"^(?P<channel>.+)/packages/(?P<subdir>[^/]+)/(?P<filename>[^/]+)$")
_PREFIX = "/api/channels/"


def _api_path(request: Request) -> str:
    # The raw path keeps %2F encoded, so an encoded slash in a file name cannot pass for a
    # path separator: each part is decoded after splitting.
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    return path[len(_PREFIX) :] if path.startswith(_PREFIX) else ""


def _who(request: Request, settings: Settings) -> tuple[TokenSettings | None, bool]:
    token = presented_token(request.headers, request.scope.get("state", {}).get("path_token"))
    return identify(token, settings.tokens.values()), token is not None


def api_routes(
    settings: Settings, state: Callable[[], tuple[Publisher, UploadStore]]
) -> list[Route]:
    async def channels_api(request: Request) -> JSONResponse:
        publisher, uploads = state()
        path = _api_path(request)
        who, presented = _who(request, settings)
        method = request.method
        if method == "POST" and (m := _UPLOAD.match(path)):
            channel, filename = unquote(m["channel"]), unquote(m["filename"])
            return await upload_raw(request, publisher, channel, filename, who, presented)
        if method == "POST" and (m := _FILES.match(path)):
            channel = unquote(m["channel"])
            return await upload_multipart(request, publisher, channel, who, presented)
        if method == "GET" and (m := _LIST.match(path)):
            name = unquote(m["channel"])
            listed = settings.channels.get(name)
            if listed is None:
                raise NotFound(f"unknown channel '{name}'", channels=sorted(settings.channels))
            if listed.private:
                require(who, presented, name, "read")
            listing = sorted(
                (u.listing() for u in uploads.list(name)),
                key=lambda u: (u["subdir"], u["filename"]),
            )
            return JSONResponse({"channel": name, "packages": listing})
        if method == "DELETE" and (m := _DELETE.match(path)):
            name = unquote(m["channel"])
            publisher.writable_channel(name, who, presented)
            removed = await uploads.delete(name, unquote(m["subdir"]), unquote(m["filename"]))
            return JSONResponse({"deleted": removed.listing()})
        raise NotFound(f"no API endpoint {method} {request.url.path}")

    return [Route("/api/channels/{rest:path}", channels_api, methods=["GET", "POST", "DELETE"])]


def admin_routes(
    settings: Settings, state: Callable[[], tuple[CacheAdmin, Metrics, Prefetcher]]
) -> list[Route]:
    """Operators' endpoints; every one needs an admin token."""

    async def stats(request: Request) -> JSONResponse:
        admin, metrics, prefetcher = state()
        who, presented = _who(request, settings)
        require(who, presented, "*", "admin")
        usage = await asyncio.to_thread(admin.usage)
        counters = metrics.channel_counts()
        stored = sum(u["bytes"] for u in usage.values())
        metrics.store_bytes.set(stored)
        free = shutil.disk_usage(settings.cache.path).free
        return JSONResponse(
            {
                "channels": stats_for(usage, counters, settings.channels),
                "store": {
                    "bytes": stored,
                    "max_size": settings.cache.max_size or None,
                    "free_disk": free,
                    "min_free": settings.cache.min_free,
                },
                "prefetch": prefetcher.jobs(),
            }
        )

    async def prefetch(request: Request) -> JSONResponse:
        _, _, prefetcher = state()
        who, presented = _who(request, settings)
        rest = request.path_params["rest"].strip("/")
        scope = _purge_scope(rest, request, settings)
        if scope.channel is None or scope.subdir is None or scope.filename is not None:
            raise BadRequest("prefetch is POST /api/cache/<channel>/<subdir>/prefetch")
        require(who, presented, scope.channel, "admin")
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("body is not JSON") from None
        items, with_deps = parse_request(body)
        job = prefetcher.submit(scope.channel, scope.subdir, items, with_deps)
        return JSONResponse(job.public(), status_code=202)

    async def purge(request: Request) -> JSONResponse:
        admin, _, _ = state()
        who, presented = _who(request, settings)
        rest = request.path_params.get("rest", "").strip("/")
        scope = _purge_scope(rest, request, settings)
        require(who, presented, scope.channel or "*", "admin")
        removed = await asyncio.to_thread(admin.purge, scope)
        return JSONResponse({"removed": removed, "scope": _describe(scope)})

    return [
        Route("/api/cache/stats", stats, methods=["GET"]),
        Route("/api/cache/{rest:path}/prefetch", prefetch, methods=["POST"]),
        Route("/api/cache", purge, methods=["DELETE"]),
        Route("/api/cache/{rest:path}", purge, methods=["DELETE"]),
    ]


def _purge_scope(rest: str, request: Request, settings: Settings) -> Scope:
    package = request.query_params.get("package")
    metadata_only = parse_bool(request.query_params.get("metadata_only"), "metadata_only")
    if not rest:
        return Scope(package=package, metadata_only=metadata_only)
    channel = channel_prefix(rest, settings.channels)
    if channel is None:
        raise NotFound(f"unknown channel in '{rest}'", channels=sorted(settings.channels))
    parts = [p for p in rest[len(channel) :].split("/") if p]
    if len(parts) > 2:
        raise BadRequest("purge scope is <channel>[/<subdir>[/<filename>]]")
    subdir = parts[0] if parts else None
    filename = parts[1] if len(parts) > 1 else None
    return Scope(channel, subdir, filename, package, metadata_only)


def _describe(scope: Scope) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(scope).items() if v not in (None, False)}
