"""The two upload endpoints' request handling: the body read with limits (bodies.py), the
package checked and recorded (publish.py), every refusal logged once as a warning.

POST /api/channels/<channel>/upload/<filename>?sha256=<hex>&force=<bool>   raw body (Quetz)
POST /api/channels/<channel>/files?force=<bool>                            multipart `files`
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from .bodies import FileParts, batches, body_chunks, check_declared_length
from .errors import BadRequest, ProxyError
from .publish import Publisher, Spool
from .query import flag
from .settings import TokenSettings
from .store import TempBlob
from .uploads import Upload

log = structlog.get_logger("condaproxy.uploads")

MAX_FILES = 100
_LOGGED_EXTRA = ("field", "member", "limit", "max_upload_size", "read_timeout", "max_members")
P = ParamSpec("P")


def refusals_logged(
    handler: Callable[P, Awaitable[JSONResponse]],
) -> Callable[P, Awaitable[JSONResponse]]:
    """A refused upload is one structured warning event (no traceback), then its JSON error."""

    @wraps(handler)
    async def logged(*args: P.args, **kwargs: P.kwargs) -> JSONResponse:
        try:
            return await handler(*args, **kwargs)
        except ProxyError as exc:
            request = args[0]
            assert isinstance(request, Request)
            extra = {k: v for k, v in exc.extra.items() if k in _LOGGED_EXTRA}
            log.warning(
                "upload refused",
                path=request.url.path,
                status=exc.status,
                error=exc.message,
                **extra,
            )
            request.state.reported = True  # the access event need not warn a second time
            raise

    return logged


@refusals_logged
async def upload_raw(
    request: Request,
    publisher: Publisher,
    channel_name: str,
    filename: str,
    who: TokenSettings | None,
    presented: bool,
) -> JSONResponse:
    channel = publisher.writable_channel(channel_name, who, presented)
    assert who is not None
    limits = publisher.limits
    check_declared_length(request.headers, limits.max_upload_size)
    upload = await publisher.publish(
        channel,
        filename,
        body_chunks(request.receive, limits.max_upload_size, limits.read_timeout),
        who,
        request.query_params.get("sha256"),
        flag(request.query_params, "force"),
    )
    return JSONResponse(upload.listing(), status_code=201)


@refusals_logged
async def upload_multipart(
    request: Request,
    publisher: Publisher,
    channel_name: str,
    who: TokenSettings | None,
    presented: bool,
) -> JSONResponse:
    """`files` parts stream into temp files as the body arrives; every package is checked
    before any is recorded."""
    channel = publisher.writable_channel(channel_name, who, presented)
    assert who is not None
    limits = publisher.limits
    check_declared_length(request.headers, limits.max_upload_size)
    force = flag(request.query_params, "force")
    spools: list[Spool] = []

    def open_spool(filename: str) -> Spool:
        spools.append(publisher.open_spool(filename))
        return spools[-1]

    staged: list[tuple[Upload, TempBlob]] = []
    try:
        parts = FileParts(request.headers.get("content-type", ""), "files", open_spool, MAX_FILES)
        body = body_chunks(request.receive, limits.max_upload_size, limits.read_timeout)
        async for batch in batches(body):
            await asyncio.to_thread(parts.feed, batch)
        parts.finish()
        if not spools:
            raise BadRequest("multipart field 'files' holds no file")
        while spools:
            staged.append(await publisher.prepare(channel, spools.pop(0), who, None))
    except BaseException:
        for spool in spools:
            spool.discard()
        for _, temp in staged:
            temp.discard()
        raise
    stored: list[Any] = []
    for i, (upload, temp) in enumerate(staged):
        try:
            stored.append(await publisher.commit(upload, temp, force))
        except BaseException:
            for _, rest in staged[i + 1 :]:
                rest.discard()
            raise
    return JSONResponse({"uploaded": [u.listing() for u in stored]}, status_code=201)
