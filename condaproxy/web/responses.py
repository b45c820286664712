"""ASGI responses for stored files and streamed misses, and the HTTP rules that pick one.

The file path is the hot path of every cache hit, so it is plain ASGI: headers as bytes,
the body read with pread in 1 MiB pieces straight from the page cache (no thread hop per
chunk, no Starlette FileResponse machinery).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..rules.conditional import http_date, if_range_allows, not_modified
from ..rules.errors import RangeNotSatisfiable
from ..rules.ranges import parse_range

log = structlog.get_logger("condaproxy.web.responses")

CHUNK = 1 << 20
Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Any]
Receive = Callable[[], Any]


@dataclass
class Representation:
    """A stored response body and the headers that describe it."""

    size: int
    content_type: str
    etag: str | None
    modified: float | None
    cache_control: str
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)

    def header_list(self, status_size: int) -> list[tuple[bytes, bytes]]:
        headers = {
            "content-type": self.content_type,
            "content-length": str(status_size),
            "cache-control": self.cache_control,
            "accept-ranges": "bytes",
            "x-cache": self.outcome.upper(),
            **self.headers,
        }
        if self.etag:
            headers["etag"] = self.etag
        if self.modified is not None:
            headers["last-modified"] = http_date(self.modified)
        return [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]


class FileResponse:
    """Serve [start, end) of an open descriptor; closes it when done."""

    def __init__(
        self,
        fd: int,
        status: int,
        headers: list[tuple[bytes, bytes]],
        start: int,
        end: int,
        head: bool,
    ) -> None:
        self.fd, self.status, self.headers = fd, status, headers
        self.start, self.end, self.head = start, end, head
        self.on_close: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
            if self.head or self.start >= self.end:
                await send({"type": "http.response.body", "body": b""})
                return
            offset = self.start
            while offset < self.end:
                chunk = os.pread(self.fd, min(CHUNK, self.end - offset), offset)
                if not chunk:
                    raise OSError("file shrank while being served")
                offset += len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": offset < self.end}
                )
        finally:
            os.close(self.fd)
            if self.on_close is not None:
                self.on_close()


class EmptyResponse:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b""})


class StreamResponse:
    """A body that arrives while it is sent (a cache miss), read from `body` (closed at the end
    whatever happens). If the source fails midway the exception propagates, so the server
    aborts the connection instead of completing it."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: Any,
        start: int = 0,
        end: int | None = None,
        head_only: bool = False,
    ) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.start, self.end, self.head_only = start, end, head_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
            if self.body is None or self.head_only or self.status == 416:
                await send({"type": "http.response.body", "body": b""})
                return
            async for chunk in self.body.chunks(self.start, self.end):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            if self.body is not None:
                await self.body.aclose()


def conditional_plan(rep: Representation, request_headers: Any) -> tuple[int, int, int] | None:
    """Decide status and byte span for a stored representation: (status, start, end), or
    None for 304. Raises RangeNotSatisfiable for 416."""
    if not_modified(
        request_headers.get("if-none-match"),
        request_headers.get("if-modified-since"),
        rep.etag,
        rep.modified,
    ):
        return None
    span = None
    if if_range_allows(request_headers.get("if-range"), rep.etag, rep.modified):
        span = parse_range(request_headers.get("range"), rep.size)
    if span is None:
        return 200, 0, rep.size
    return 206, span[0], span[1]


def respond_with_file(
    rep: Representation, open_fd: Callable[[], int], request_headers: Any, method: str
) -> Any:
    """The full HTTP answer for a stored body: 200, 206, 304 or 416, HEAD exactly like GET."""
    try:
        plan = conditional_plan(rep, request_headers)
    except RangeNotSatisfiable:
        headers = rep.header_list(0)
        headers.append((b"content-range", f"bytes */{rep.size}".encode()))
        return EmptyResponse(416, headers)
    if plan is None:
        headers = [h for h in rep.header_list(0) if h[0] != b"content-length"]
        return EmptyResponse(304, headers)
    status, start, end = plan
    headers = rep.header_list(end - start)
    if status == 206:
        headers.append((b"content-range", f"bytes {start}-{end - 1}/{rep.size}".encode()))
    return FileResponse(open_fd(), status, headers, start, end, method == "HEAD")
