"""The cache API, for operators; every call needs an admin token and leaves an audit event.

GET    /api/cache/stats
DELETE /api/cache[/<channel>[/<subdir>[/<filename>]]]?package=&metadata_only=
POST   /api/cache/<channel>/<subdir>/prefetch
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..ops.admin import Scope, stats_for
from ..ops.metrics import channel_counts
from ..ops.prefetch import MAX_BODY, decode_request
from ..rules.auth import require
from ..rules.errors import BadRequest
from ..rules.routing import PACKAGE_NAME_RE, channel_of, serves_below_subdir, unknown_channel
from ..settings import Settings, TokenSettings
from .bodies import small_body
from .logs import audited
from .query import flag, known, single
from .requests import CACHE, api_path, subdir_param, who_is_asking
from .services import Services


def cache_routes(settings: Settings, services: Callable[[], Services]) -> list[Route]:
    async def stats(request: Request) -> JSONResponse:
        built = services()
        who, presented = who_is_asking(request, settings)
        require(who, presented, "*", "admin")
        await built.downloads.write_behind.flush()  # count what this worker has verified
        usage = await asyncio.to_thread(built.admin.usage)
        stored = sum(u["bytes"] for u in usage.values())
        built.metrics.store_bytes.set(stored)
        return JSONResponse(
            {
                "channels": stats_for(usage, channel_counts(built.metrics), settings.channels),
                "store": {
                    "bytes": stored,
                    "max_size": settings.cache.max_size or None,
                    "free_disk": shutil.disk_usage(settings.cache.path).free,
                    "min_free": settings.cache.min_free,
                },
                "prefetch": built.prefetcher.jobs(),
            }
        )

    async def prefetch(request: Request) -> JSONResponse:
        who, presented = who_is_asking(request, settings)
        rest = api_path(request, CACHE).removesuffix("/prefetch")
        scope = purge_scope(rest, request, settings, who, PREFETCH_USAGE)
        if scope.channel is None or scope.subdir is None or scope.filename is not None:
            raise BadRequest(PREFETCH_USAGE)
        channel, subdir = scope.channel, scope.subdir

        async def submit() -> Any:
            require(who, presented, channel, "admin")
            timeout = settings.uploads.read_timeout
            raw = await small_body(
                request.receive, request.headers, MAX_BODY, timeout, "a prefetch request body"
            )
            items, with_deps = decode_request(raw)
            return services().prefetcher.submit(channel, subdir, items, with_deps)

        token = who.name if who else None
        job = await audited("prefetch", token, f"{channel}/{subdir}", submit())
        return JSONResponse(job.public(), status_code=202)

    async def purge(request: Request) -> JSONResponse:
        who, presented = who_is_asking(request, settings)
        scope = purge_scope(api_path(request, CACHE), request, settings, who)

        async def run() -> Any:
            require(who, presented, scope.channel or "*", "admin")
            # The scope is the path and the query alone: a body (`{"package": "numpy"}`) was
            # never read, and its purge took every file of the channel.
            timeout = settings.uploads.read_timeout
            if await small_body(request.receive, request.headers, MAX_BODY, timeout, "a purge"):
                raise BadRequest(
                    "a purge takes no body: its scope is the path and the query "
                    "(?package=, ?metadata_only=)"
                )
            cluster = services().cluster
            if cluster is not None:  # every replica's cache, and the shared bucket's copies
                return await cluster.purge(dataclasses.asdict(scope))
            return await asyncio.to_thread(services().admin.purge, scope)

        target = json.dumps(describe(scope), sort_keys=True)
        removed = await audited("purge", who.name if who else None, target, run())
        # Files this worker verified before the purge and has not committed yet are dropped
        # (commits.py); until their batch is written, its clients would get them from memory.
        await services().downloads.write_behind.flush()
        usage = await asyncio.to_thread(services().admin.usage)  # condaproxy_store_bytes
        services().metrics.store_bytes.set(sum(u["bytes"] for u in usage.values()))
        return JSONResponse({"removed": removed, "scope": describe(scope)})

    return [
        Route("/api/cache/stats", stats, methods=["GET"]),
        Route("/api/cache/{rest:path}/prefetch", prefetch, methods=["POST"]),
        Route("/api/cache", purge, methods=["DELETE"]),
        Route("/api/cache/{rest:path}", purge, methods=["DELETE"]),
    ]


PURGE_USAGE = "purge scope is <channel>[/<subdir>[/<filename>]]"
PREFETCH_USAGE = "prefetch is POST /api/cache/<channel>/<subdir>/prefetch"


def purge_scope(
    rest: str,
    request: Request,
    settings: Settings,
    who: TokenSettings | None,
    usage: str = PURGE_USAGE,
) -> Scope:
    """`<channel>[/<subdir>[/<filename>]]` (decoded segments, see requests.api_path): a
    configured channel, a conda subdir, a file a channel serves below a subdir. A query
    the purge would not read, or a bare `metadata_only`, is a 400: read as absent, it
    widened the purge to every file of the scope."""
    if usage == PURGE_USAGE:
        known(request.query_params, ("package", "metadata_only"), "a purge")
    else:  # a prefetch says everything in its body: `?with_dependencies=true` was ignored
        known(request.query_params, (), "a prefetch")
    package = single(request.query_params, "package")
    if package is not None and not PACKAGE_NAME_RE.match(package):
        raise BadRequest(f"query parameter 'package' is not a conda package name: {package!r}")
    metadata_only = flag(request.query_params, "metadata_only", bare_is_false=False)
    if not rest:
        return Scope(package=package, metadata_only=metadata_only)
    segments = rest.split("/")
    channel = channel_of(segments, settings.channels)
    if channel is None:
        raise unknown_channel(f"unknown channel in '{rest}'", settings.channels, who)
    parts = segments[len(channel.split("/")) :]
    if len(parts) > 2:
        raise BadRequest(usage)
    subdir = subdir_param(parts[0]) if parts else None
    filename = parts[1] if len(parts) > 1 else None
    if filename is not None and not serves_below_subdir(filename):
        raise BadRequest(f"'{filename}' is not a file a conda channel serves below a subdir")
    return Scope(channel, subdir, filename, package, metadata_only)


def describe(scope: Scope) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(scope).items() if v not in (None, False)}
