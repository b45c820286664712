"""Reading upload request bodies off the ASGI connection: counted as they arrive, cut at the
size limit and when the client stops sending, multipart parts streamed straight to temp files.

Invariants: no more than `limit` body bytes are ever accepted, whatever the framing
(Content-Length, chunked, multipart) claims; no read waits longer than `timeout` seconds for the
next piece of the body; nothing is spooled to memory or to /tmp (file parts go to the temp
files the caller opens, which the caller discards on any error).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..rules.errors import BadRequest, PayloadTooLarge, RequestTimeout
from ..rules.multipart import MAX_BOUNDARY, valid_boundary
from ..rules.numbers import decimal

Receive = Callable[[], Awaitable[Mapping[str, Any]]]
_MAX_OTHER_PARTS = 64 * 1024  # bytes of form fields other than files, all together
# Parts that are not files (Quetz's form sends one, `force`). Each costs parsing, not memory:
# without a bound, a body of 2 GiB of empty parts kept a worker thread (shared with reads of
# the cache) busy for minutes.
MAX_FIELD_PARTS = 64


class BodyTooLarge(PayloadTooLarge):
    # The rest of the body is not read: the connection is closed once the answer is sent.
    headers = {"connection": "close"}  # noqa: RUF012 - class constant


class BodyTimeout(RequestTimeout):
    headers = {"connection": "close"}  # noqa: RUF012 - class constant


class ClientGone(BadRequest):
    """The client closed the connection before sending the whole body (nobody sees the answer)."""


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"request body is larger than max_upload_size ({limit} bytes)", max_upload_size=limit
    )


def check_declared_length(headers: Mapping[str, str], limit: int) -> None:
    """Refuse at once a body whose Content-Length is already over the limit."""
    length = decimal(headers.get("content-length"))
    if length is not None and length > limit:
        raise too_large(limit)


async def body_chunks(receive: Receive, limit: int, timeout: float) -> AsyncIterator[bytes]:
    """The request body as it arrives, counted against `limit` (413) and cut when no piece
    arrives within `timeout` seconds (408)."""
    received = 0
    more = True
    while more:
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except TimeoutError:
            raise BodyTimeout(
                f"the request body stalled: nothing arrived for {timeout:g} s "
                "(uploads.read_timeout)",
                read_timeout=timeout,
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGone("the client closed the connection before sending the whole body")
        body = message.get("body", b"")
        received += len(body)
        if received > limit:
            raise too_large(limit)
        more = bool(message.get("more_body", False))
        if body:
            yield body


async def small_body(
    receive: Receive, headers: Mapping[str, str], limit: int, timeout: float, what: str
) -> bytes:
    """A body an API call holds in memory whole (a prefetch's JSON): at most `limit` bytes
    (413 naming `what`, from Content-Length before a byte is read, else as it arrives),
    each piece within `timeout` seconds (408)."""
    refused = BodyTooLarge(f"{what} is larger than {limit} bytes", limit=limit)
    length = decimal(headers.get("content-length"))
    if length is not None and length > limit:
        raise refused
    pieces: list[bytes] = []
    try:
        async for piece in body_chunks(receive, limit, timeout):
            pieces.append(piece)
    except BodyTooLarge:
        raise refused from None
    return b"".join(pieces)


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


class FileParts:
    """A multipart/form-data parser (python-multipart, RFC 7578) that sends each file part of
    the field `field` to a sink opened for it, as its bytes arrive. The values of the plain
    fields named in `keep` are kept in `fields` (Quetz's form sends `force` so); other fields are
    skipped (bounded). Callbacks run wherever `feed` runs: the caller runs it in a worker
    thread."""

    def __init__(
        self,
        content_type: str,
        field: str,
        open_sink: Callable[[str], Sink],
        max_files: int,
        keep: tuple[str, ...] = (),
    ) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise BadRequest("body must be multipart/form-data with a boundary")
        if not valid_boundary(boundary):
            raise BadRequest(
                f"the multipart boundary must be 1 to {MAX_BOUNDARY} letters, digits or "
                "'()+_,-./:=? (RFC 2046)"
            )
        self.field = field.encode()
        self.open_sink = open_sink
        self.max_files = max_files
        self.files = 0
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._sink: Sink | None = None
        self._other = 0
        self._field_parts = 0
        self._keep = keep
        self._field: str | None = None
        self.fields: dict[str, bytes] = {}
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_cb,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body: {exc}"[:300]) from None

    def finish(self) -> None:
        if not self.ended:
            raise BadRequest("the multipart body ended before its closing boundary")

    def _part_begin(self) -> None:
        self._disposition = b""
        self._sink = None
        self._field = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        filename = options.get(b"filename")
        if options.get(b"name") != self.field or filename is None:
            self._field_parts += 1
            if self._field_parts > MAX_FIELD_PARTS:
                raise BadRequest(
                    f"more than {MAX_FIELD_PARTS} form fields other than "
                    f"'{self.field.decode()}' files in one request"
                )
            name = options.get(b"name", b"").decode("utf-8", "replace")
            if filename is None and name in self._keep:  # a plain field whose value is kept
                self._field = name
                self.fields[name] = b""
            return
        self.files += 1
        if self.files > self.max_files:
            raise BadRequest(f"more than {self.max_files} files in one request")
        self._sink = self.open_sink(filename.decode("utf-8", "replace"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._sink.write(data[start:end])
            return
        self._other += end - start
        if self._field is not None:
            self.fields[self._field] += data[start:end]
        if self._other > _MAX_OTHER_PARTS:
            raise BadRequest(
                f"form fields other than '{self.field.decode()}' hold more than "
                f"{_MAX_OTHER_PARTS} bytes"
            )

    def _part_end(self) -> None:
        self._sink = None
        self._field = None

    def _end(self) -> None:
        self.ended = True
