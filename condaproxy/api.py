"""The upload API (Quetz-compatible) and package listing: parse, authorize, call, answer.

POST   /api/channels/<channel>/upload/<filename>?sha256=<hex>&force=<bool>   raw body
POST   /api/channels/<channel>/files                                         multipart `files`
GET    /api/channels/<channel>/packages
DELETE /api/channels/<channel>/packages/<subdir>/<filename>
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .admin import CacheAdmin, Scope, stats_for
from .auth import identify, presented_token, require
from .errors import BadRequest, NotFound
from .logs import audited
from .metrics import Metrics
from .paths import raw_path_of, split_raw_path
from .prefetch import Prefetcher, parse_request
from .publish import Publisher
from .query import flag
from .routing import (
    PACKAGE_NAME_RE,
    PACKAGE_RE,
    SUBDIR_RE,
    channel_of,
    serves_below_subdir,
    unknown_channel,
)
from .settings import Settings, TokenSettings
from .upload_api import upload_multipart, upload_raw
from .uploads import UploadStore

# Matched against the decoded segments joined by `/` (_api_path): no segment holds a `/`.
_UPLOAD = re.compile(r"^(?P<channel>.+)/upload/(?P<filename>[^/]+)\Z")
_FILES = re.compile(r"^(?P<channel>.+)/files\Z")
_LIST = re.compile(r"^(?P<channel>.+)/packages\Z")
_DELETE = re.compile(r"^(?P<channel>.+)/packages/(?P<subdir>[^/]+)/(?P<filename>[^/]+)\Z")
_PREFIX = ("api", "channels")
_CACHE = ("api", "cache")


def _api_path(request: Request, prefix: tuple[str, ...] = _PREFIX) -> str:
    """The path below `prefix`, as decoded segments joined by `/`. The raw path is split and
    each segment decoded once and checked (paths.split_raw_path, the rule channel paths
    follow too), so an encoded slash or dot segment cannot pass for a path step."""
    segments = split_raw_path(raw_path_of(request.scope))
    if tuple(segments[: len(prefix)]) != prefix:
        return ""
    return "/".join(segments[len(prefix) :])


def _known_channel(name: str, settings: Settings, who: TokenSettings | None) -> str:
    """`name` if it is a configured channel; else the unknown-channel 404 for this caller."""
    if name not in settings.channels:
        raise unknown_channel(f"unknown channel '{name}'", settings.channels, who)
    return name


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
        token = who.name if who else None
        if method == "POST" and (m := _UPLOAD.match(path)):
            name = _known_channel(m["channel"], settings, who)
            call = upload_raw(request, publisher, name, m["filename"], who, presented)
            return await audited("upload", token, f"{name}/{m['filename']}", call)
        if method == "POST" and (m := _FILES.match(path)):
            name = _known_channel(m["channel"], settings, who)
            call = upload_multipart(request, publisher, name, who, presented)
            return await audited("upload", token, name, call)
        if method == "GET" and (m := _LIST.match(path)):
            name = _known_channel(m["channel"], settings, who)
            if settings.channels[name].private:
                require(who, presented, name, "read")
            listing = sorted(
                (u.listing() for u in uploads.list(name)),
                key=lambda u: (u["subdir"], u["filename"]),
            )
            return JSONResponse({"channel": name, "packages": listing})
        if method == "DELETE" and (m := _DELETE.match(path)):
            name = _known_channel(m["channel"], settings, who)

            async def delete() -> Any:
                publisher.writable_channel(name, who, presented)
                subdir, filename = _subdir(m["subdir"]), _package(m["filename"])
                return await uploads.delete(name, subdir, filename)

            target = f"{name}/{m['subdir']}/{m['filename']}"
            removed = await audited("delete", token, target, delete())
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
        rest = _api_path(request, _CACHE).removesuffix("/prefetch")
        scope = _purge_scope(rest, request, settings, who)
        if scope.channel is None or scope.subdir is None or scope.filename is not None:
            raise BadRequest("prefetch is POST /api/cache/<channel>/<subdir>/prefetch")
        channel, subdir = scope.channel, scope.subdir

        async def submit() -> Any:
            require(who, presented, channel, "admin")
            try:
                body = await request.json()
            except ValueError:
                raise BadRequest("body is not JSON") from None
            items, with_deps = parse_request(body)
            return prefetcher.submit(channel, subdir, items, with_deps)

        token = who.name if who else None
        job = await audited("prefetch", token, f"{channel}/{subdir}", submit())
        return JSONResponse(job.public(), status_code=202)

    async def purge(request: Request) -> JSONResponse:
        admin, _, _ = state()
        who, presented = _who(request, settings)
        rest = _api_path(request, _CACHE)
        scope = _purge_scope(rest, request, settings, who)

        async def purge_scope() -> Any:
            require(who, presented, scope.channel or "*", "admin")
            return await asyncio.to_thread(admin.purge, scope)

        target = json.dumps(_describe(scope), sort_keys=True)
        removed = await audited("purge", who.name if who else None, target, purge_scope())
        return JSONResponse({"removed": removed, "scope": _describe(scope)})

    return [
        Route("/api/cache/stats", stats, methods=["GET"]),
        Route("/api/cache/{rest:path}/prefetch", prefetch, methods=["POST"]),
        Route("/api/cache", purge, methods=["DELETE"]),
        Route("/api/cache/{rest:path}", purge, methods=["DELETE"]),
    ]


def _purge_scope(
    rest: str, request: Request, settings: Settings, who: TokenSettings | None
) -> Scope:
    """`<channel>[/<subdir>[/<filename>]]` (decoded segments, see _api_path): a configured
    channel, a conda subdir, a file a channel serves below a subdir."""
    package = request.query_params.get("package")
    if package is not None and not PACKAGE_NAME_RE.match(package):
        raise BadRequest(f"query parameter 'package' is not a conda package name: {package!r}")
    metadata_only = flag(request.query_params, "metadata_only")
    if not rest:
        return Scope(package=package, metadata_only=metadata_only)
    segments = rest.split("/")
    channel = channel_of(segments, settings.channels)
    if channel is None:
        raise unknown_channel(f"unknown channel in '{rest}'", settings.channels, who)
    parts = segments[len(channel.split("/")) :]
    if len(parts) > 2:
        raise BadRequest("purge scope is <channel>[/<subdir>[/<filename>]]")
    subdir = _subdir(parts[0]) if parts else None
    filename = parts[1] if len(parts) > 1 else None
    if filename is not None and not serves_below_subdir(filename):
        raise BadRequest(f"'{filename}' is not a file a conda channel serves below a subdir")
    return Scope(channel, subdir, filename, package, metadata_only)


def _subdir(text: str) -> str:
    if not SUBDIR_RE.match(text):
        raise BadRequest(f"'{text}' is not a conda subdir (noarch or <platform>-<arch>)")
    return text


def _package(text: str) -> str:
    if not PACKAGE_RE.match(text):
        raise BadRequest(f"'{text}' is not <name>-<version>-<build>.conda or .tar.bz2")
    return text


def _describe(scope: Scope) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(scope).items() if v not in (None, False)}
