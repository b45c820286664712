"""The upload API (Quetz-compatible), one handler per route: bodies read with limits
(bodies.py), packages checked and recorded (cache/publish.py), every refusal logged once as a
warning, every change audited.

POST   /api/channels/<channel>/upload/<filename>?sha256=<hex>&force=<bool>   raw body (Quetz)
POST   /api/channels/<channel>/files?force=<bool>                            multipart `files`
GET    /api/channels/<channel>/packages
DELETE /api/channels/<channel>/packages/<subdir>/<filename>

Channel names may hold `/`, so one route takes every path below /api/channels/ and the
patterns below (matched against the checked, decoded segments) pick the handler.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..cache.publish import Publisher, Spool, batches
from ..rules.auth import require
from ..rules.errors import (
    BadRequest,
    InsufficientStorage,
    MethodNotAllowed,
    NotFound,
    ProxyError,
    disk_full,
)
from ..settings import Settings, TokenSettings
from ..storage.blobs import TempBlob
from ..storage.uploads import Upload
from .bodies import FileParts, body_chunks, check_declared_length
from .logs import audited
from .query import flag, single
from .requests import (
    CHANNELS,
    api_path,
    known_channel,
    package_param,
    subdir_param,
    who_is_asking,
)
from .services import Services

log = structlog.get_logger("condaproxy.web.uploads_api")

MAX_FILES = 100
_LOGGED_EXTRA = ("field", "member", "limit", "max_upload_size", "read_timeout", "max_members")
P = ParamSpec("P")


def refusals_logged(
    handler: Callable[P, Awaitable[JSONResponse]],
) -> Callable[P, Awaitable[JSONResponse]]:
    """A refused upload is one structured warning event (no traceback), then its JSON error."""

    async def stored(*args: P.args, **kwargs: P.kwargs) -> JSONResponse:
        try:
            return await handler(*args, **kwargs)
        except OSError as exc:  # the body, the blob or the manifest did not fit: none kept
            if not disk_full(exc):
                raise
            raise InsufficientStorage(
                f"the proxy's disk is full ({exc.strerror or exc}): the upload was not "
                "stored; retry later"
            ) from None

    @wraps(handler)
    async def logged(*args: P.args, **kwargs: P.kwargs) -> JSONResponse:
        try:
            return await stored(*args, **kwargs)
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
        single(request.query_params, "sha256"),
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
        content_type = request.headers.get("content-type", "")
        parts = FileParts(content_type, "files", open_spool, MAX_FILES, keep=("force",))
        body = body_chunks(request.receive, limits.max_upload_size, limits.read_timeout)
        async for batch in batches(body):
            await asyncio.to_thread(parts.feed, batch)
        parts.finish()
        if not spools:
            raise BadRequest("multipart field 'files' holds no file")
        # Quetz's form takes `force` as a field beside the files; the query works too.
        field = parts.fields.get("force", b"").decode("utf-8", "replace").strip()
        force = force or flag({"force": field}, "force")
        while spools:
            staged.append(await publisher.prepare(channel, spools.pop(0), who, None))
    except BaseException:
        for spool in spools:
            spool.discard()
        for _, temp in staged:
            temp.discard()
        raise
    # Names compare case-folded, as against the stored uploads (storage/uploads.same_file):
    # `mytool-1.0-H0.conda` beside `mytool-1.0-h0.conda` would otherwise replace it in the
    # very write that reports both as uploaded.
    seen: dict[str, str] = {}
    for upload, _ in staged:
        first = seen.get(upload.filename.lower())
        seen[upload.filename.lower()] = upload.filename
        if first is not None:
            for _, temp in staged:
                temp.discard()
            also = "" if first == upload.filename else f" ({first} and {upload.filename})"
            raise BadRequest(
                f"a multipart upload names the same file twice{also}; file names compare "
                "case-folded"
            )
    stored = await publisher.commit_all(staged, force)
    return JSONResponse({"uploaded": [u.listing() for u in stored]}, status_code=201)


async def list_packages(
    request: Request, services: Services, name: str, who: TokenSettings | None, presented: bool
) -> JSONResponse:
    if services.settings.channels[name].private:
        require(who, presented, name, "read")
    listing = sorted(
        (u.listing() for u in services.uploads.list(name)),
        key=lambda u: (u["subdir"], u["filename"]),
    )
    return JSONResponse({"channel": name, "packages": listing})


async def delete_package(
    services: Services,
    name: str,
    subdir: str,
    filename: str,
    who: TokenSettings | None,
    presented: bool,
) -> JSONResponse:
    services.publisher.writable_channel(name, who, presented)
    removed = await services.uploads.delete(name, subdir_param(subdir), package_param(filename))
    return JSONResponse({"deleted": removed.listing()})


_UPLOAD = re.compile(r"^(?P<channel>.+)/upload/(?P<filename>[^/]+)\Z")
_FILES = re.compile(r"^(?P<channel>.+)/files\Z")
_LIST = re.compile(r"^(?P<channel>.+)/packages\Z")
_DELETE = re.compile(r"^(?P<channel>.+)/packages/(?P<subdir>[^/]+)/(?P<filename>[^/]+)\Z")


def uploads_routes(settings: Settings, services: Callable[[], Services]) -> list[Route]:
    async def channels_api(request: Request) -> JSONResponse:
        built = services()
        path = api_path(request, CHANNELS)
        who, presented = who_is_asking(request, settings)
        token, method = (who.name if who else None), request.method
        if method == "POST" and (m := _UPLOAD.match(path)):
            name = known_channel(m["channel"], settings, who)
            call = upload_raw(request, built.publisher, name, m["filename"], who, presented)
            return await audited("upload", token, f"{name}/{m['filename']}", call)
        if method == "POST" and (m := _FILES.match(path)):
            name = known_channel(m["channel"], settings, who)
            call = upload_multipart(request, built.publisher, name, who, presented)
            return await audited("upload", token, name, call)
        if method in ("GET", "HEAD") and (m := _LIST.match(path)):
            name = known_channel(m["channel"], settings, who)
            return await list_packages(request, built, name, who, presented)
        if method == "DELETE" and (m := _DELETE.match(path)):
            name = known_channel(m["channel"], settings, who)
            call = delete_package(built, name, m["subdir"], m["filename"], who, presented)
            return await audited("delete", token, f"{name}/{m['subdir']}/{m['filename']}", call)
        allowed = allowed_methods(path)
        if allowed:  # an endpoint, asked with another method: its 405 names the ones it takes
            raise MethodNotAllowed(method, allowed)
        raise NotFound(f"no API endpoint {method} {request.url.path}")

    # Every method reaches the handler, so a 405's `Allow` is the one endpoint's, not the union
    # of all of them (Starlette's own 405 would offer GET for an upload URL).
    return [Route("/api/channels/{rest:path}", _AnyMethod(request_response(channels_api)))]


class _AnyMethod:
    """An ASGI endpoint: Starlette routes every method to it (a plain function would be
    GET-only, or get Starlette's 405 naming every method of every endpoint)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def allowed_methods(path: str) -> tuple[str, ...]:
    """The methods the endpoint at `path` (below /api/channels/) answers; () for none."""
    allowed: list[str] = []
    if _UPLOAD.match(path) or _FILES.match(path):
        allowed.append("POST")
    if _LIST.match(path):
        allowed.extend(("GET", "HEAD"))
    if _DELETE.match(path):
        allowed.append("DELETE")
    return tuple(allowed)
