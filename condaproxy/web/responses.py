"""ASGI responses for stored files and streamed misses, and the HTTP rules that pick one.

The file path is the hot path of every cache hit, so it is plain ASGI: headers as bytes,
the body read with pread in 256 KiB pieces (send_pieces says why) straight from the page
cache (no thread hop per chunk, no Starlette FileResponse machinery).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from ..cache.results import Result, Stored, Streamed
from ..cache.transfer import Segment
from ..rules.conditional import http_date, if_range_allows, not_modified, strong_etag
from ..rules.errors import RangeNotSatisfiable
from ..rules.ranges import parse_range
from .zerocopy import EXTENSION as ZERO_COPY

log = structlog.get_logger("condaproxy.web.responses")

PIECE = 256 << 10  # bytes handed to the server at once (send_pieces)
YIELD_EVERY = 8  # pieces of a stored file between two looks for the client's hang-up
# A stored body from this size watches for its client's hang-up. A smaller one is sent to its
# end whatever happens (at most this much read from the page cache for nobody, a few ms), which
# spares every ordinary hit the watcher task (measured: a cached 1 MiB package, wrk, 2 workers,
# 0.76-0.87 of nginx before the watcher, 0.47-0.74 with it on every body over one piece).
WATCH_FROM = 8 << 20
Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Any]
Receive = Callable[[], Any]


def _stored_headers(result: Stored, length: int) -> list[tuple[bytes, bytes]]:
    headers = {
        "content-type": result.content_type,
        "content-length": str(length),
        "cache-control": result.cache_control,
        "accept-ranges": "bytes",
        "x-cache": result.outcome.upper(),
        **result.headers,
    }
    if result.etag:
        headers["etag"] = result.etag
    if result.modified is not None:
        headers["last-modified"] = http_date(result.modified)
    return [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]


async def send_pieces(send: Send, body: bytes, more: bool) -> None:
    """Hand `body` to the server at most PIECE bytes at a time. uvicorn's send writes a piece
    whole into the connection's buffer and waits while the client does not take it, and the
    kernel takes the first few MiB of a connection whether its client reads or not: a client
    that asked for a big file and read nothing pinned a whole 1 MiB piece and its copy (~2 MiB
    of the proxy's memory), for as long as it liked; 200 such connections held 400 MB. With
    PIECE = 256 KiB they hold a quarter of that, at no cost in throughput (measured: a hit at
    about 2 GB/s either way on loopback; 64 KiB pieces cost some)."""
    if len(body) <= PIECE:
        await send({"type": "http.response.body", "body": body, "more_body": more})
        return
    for offset in range(0, len(body), PIECE):
        last = offset + PIECE >= len(body)
        piece = body[offset : offset + PIECE]
        await send({"type": "http.response.body", "body": piece, "more_body": more or not last})


class FileResponse:
    """Serve [start, end) of an open descriptor; closes it when done.

    A body from WATCH_FROM bytes stops when its client hangs up: uvicorn's `send` to a closed
    connection returns at once without a word, so the rest of the file was read on the event
    loop for nobody, every other client of the worker frozen meanwhile (a 1 GiB package per
    abandoned GET). The hang-up is looked for every YIELD_EVERY pieces."""

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
        gone: asyncio.Future[None] | None = None  # the client's hang-up, for a big body
        try:
            await send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
            if self.head or self.start >= self.end:
                await send({"type": "http.response.body", "body": b""})
                return
            watch = self.end - self.start >= WATCH_FROM
            if watch:
                gone = asyncio.ensure_future(_disconnect(receive))
            if ZERO_COPY in scope.get("extensions", ()):
                await self._send_zero_copy(send, gone)
                return
            offset, pieces = self.start, 0
            while offset < self.end:
                if gone is not None:
                    pieces += 1
                    if pieces % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # the watcher's turn: a send to a closed
                        # connection returns at once, so nothing else would give it one
                    if gone.done():
                        return  # the client hung up: the rest is read for nobody
                chunk = os.pread(self.fd, min(PIECE, self.end - offset), offset)
                if not chunk:
                    raise OSError("file shrank while being served")
                offset += len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": offset < self.end}
                )
        finally:
            if gone is not None:
                gone.cancel()
                await asyncio.gather(gone, return_exceptions=True)
            os.close(self.fd)
            if self.on_close is not None:
                self.on_close()

    async def _send_zero_copy(self, send: Send, gone: asyncio.Future[None] | None) -> None:
        """The body by sendfile (web/zerocopy.py): in one message, or, while watching for
        the client's hang-up, YIELD_EVERY pieces at a time."""
        step = self.end - self.start if gone is None else PIECE * YIELD_EVERY
        offset = self.start
        while offset < self.end:
            count = min(step, self.end - offset)
            more = offset + count < self.end
            message = {"type": ZERO_COPY, "file": self.fd, "offset": offset, "count": count}
            await send({**message, "more_body": more})
            offset += count
            if gone is not None and more:
                await asyncio.sleep(0)  # the watcher's turn
                if gone.done():
                    return  # the client hung up: the rest is read for nobody


class EmptyResponse:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b""})


class StreamResponse:
    """A body that arrives while it is sent (a cache miss), read from `body` (closed at the end
    whatever happens). If the source fails midway the exception propagates, so the server
    aborts the connection instead of completing it.

    A client that hangs up ends the response at once: uvicorn's `send` to a closed connection
    returns without a word, so without listening for `http.disconnect` the reader would go on
    to the end of the download for nobody (and hold a download that keeps nothing, which
    stops when its last reader leaves: cache/transfer.Download.stop_if_unread)."""

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
            if self.body is None or self.head_only or self.status in (304, 416):
                await send({"type": "http.response.body", "body": b""})
                return
            if ZERO_COPY in scope.get("extensions", ()) and hasattr(self.body, "zero_copy"):
                self.body.zero_copy = True  # what is on disk comes as Segments, by sendfile
            await _unless_disconnected(self._send_body(send), receive)
        finally:
            if self.body is not None:
                await self.body.aclose()

    async def _send_body(self, send: Send) -> None:
        async for chunk in self.body.chunks(self.start, self.end):
            if isinstance(chunk, Segment):
                message = {"type": ZERO_COPY, "file": chunk.fd, "offset": chunk.offset}
                await send({**message, "count": chunk.count, "more_body": True})
            else:
                await send_pieces(send, chunk, True)
        await send({"type": "http.response.body", "body": b""})


async def _unless_disconnected(sending: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run `sending` to its end, or until the client disconnects (then it is cancelled and
    the response just ends). Its errors propagate: the server aborts the connection."""
    body = asyncio.ensure_future(sending)
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((body, gone), return_when=asyncio.FIRST_COMPLETED)
        finished = body.done()
    finally:
        gone.cancel()
        body.cancel()  # nothing when it is done
        await asyncio.gather(body, gone, return_exceptions=True)
    if finished:
        body.result()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def respond(result: Result, request_headers: Any, method: str) -> Any:
    """The HTTP answer for what the engine found, HEAD exactly like GET."""
    if isinstance(result, Stored):
        return _stored(result, request_headers, method)
    return _streamed(result, request_headers, method)


def conditional_plan(rep: Stored, request_headers: Any) -> tuple[int, int, int] | None:
    """Decide status and byte span for a stored body: (status, start, end), or None for
    304. Raises RangeNotSatisfiable for 416."""
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


def _stored(result: Stored, request_headers: Any, method: str) -> Any:
    """200, 206, 304 or 416 for a body on disk; a descriptor already open is closed when no
    body goes out."""
    try:
        plan = conditional_plan(result, request_headers)
    except RangeNotSatisfiable:
        _release(result)
        headers = _stored_headers(result, 0)
        headers.append((b"content-range", f"bytes */{result.size}".encode()))
        return EmptyResponse(416, headers)
    if plan is None:
        _release(result)
        headers = [h for h in _stored_headers(result, 0) if h[0] != b"content-length"]
        return EmptyResponse(304, headers)
    status, start, end = plan
    headers = _stored_headers(result, end - start)
    if status == 206:
        headers.append((b"content-range", f"bytes {start}-{end - 1}/{result.size}".encode()))
    response = FileResponse(result.open(), status, headers, start, end, method == "HEAD")
    if result.on_open is not None:
        result.on_open()
    response.on_close = result.on_close
    return response


def _release(result: Stored) -> None:
    if result.fd is not None:
        os.close(result.fd)
        result.fd = None


def _streamed(result: Streamed, request_headers: Any, method: str) -> Any:
    """Headers for a miss from what is known before the body; ranges only where the body can
    serve them (otherwise the whole file: RFC 9110 §14.2 lets a server ignore Range). The
    ETag is the sha256 the channel publishes, known before a byte arrives, so If-None-Match
    is answered as for a hit (RFC 9110 §13.1.2: evaluated before the method is performed)."""
    head, body = result.head, result.body
    etag = strong_etag(head.sha256) if head.sha256 else None
    out = [
        (b"content-type", head.content_type.encode()),
        (b"cache-control", result.cache_control.encode()),
        (b"accept-ranges", b"bytes"),
        (b"x-cache", result.outcome.upper().encode()),
    ]
    if etag:
        out.append((b"etag", etag.encode()))
    if not_modified(request_headers.get("if-none-match"), None, etag, None):
        return StreamResponse(304, out, body, 0, 0)
    start, end, status = 0, head.size, 200
    ranges = body is None or body.ranges
    if (
        ranges
        and head.size is not None
        and if_range_allows(request_headers.get("if-range"), etag, None)
    ):
        try:
            span = parse_range(request_headers.get("range"), head.size)
        except RangeNotSatisfiable:
            # An empty body, said so as for a hit (not a chunked nothing, nor a HEAD silent
            # on its length).
            unsatisfiable = [
                *out,
                (b"content-range", f"bytes */{head.size}".encode()),
                (b"content-length", b"0"),
            ]
            return StreamResponse(416, unsatisfiable, body, 0, 0)
        if span is not None:
            start, end, status = span[0], span[1], 206
    if end is not None:
        out.append((b"content-length", str(end - start).encode()))
    if status == 206 and end is not None:
        out.append((b"content-range", f"bytes {start}-{end - 1}/{head.size}".encode()))
    return StreamResponse(status, out, body, start, end, head_only=method == "HEAD")
