"""The HTTP/1.1 connection as uvicorn parses it (httptools), with the two bounds on a request's
head that uvicorn leaves out.

- **Size.** uvicorn's httptools protocol keeps a request line and header fields however long
  they grow: one client sending a 256 MiB header held 256 MiB of the server's memory, and a
  few such clients exhaust it. Here a head over MAX_HEAD bytes is answered 431 (RFC 6585 §5)
  and the connection closed, at most one socket read past the limit.
- **Time.** uvicorn's keep-alive timer runs only after a response: a connection that never
  sends a request, or sends its head a byte at a time (slowloris), was held forever, and
  enough of them use up the process's file descriptors. Here a head must be complete within
  `server.header_timeout` seconds of the connection, of the end of the previous response, or
  of its first byte; otherwise the connection is closed (with a 408 if the head had begun).
  A head pipelined behind a response still going out is timed from that response's end: a
  connection with a request under way is never timed out (nor shed, web/occupancy.py) as
  one waiting for a head.

- **A client that stops reading.** Once the socket's send buffer is full, a response waits
  for the client to take bytes. A client that never does held its connection, its descriptor
  and its response's pieces for ever. Here writing that stays blocked for
  `server.send_timeout` seconds (nginx's `send_timeout`: between two successive writes)
  aborts the connection; a slow but moving reader resumes writing long before.

- **A body nobody reads.** A request answered before its body ended (a GET with a body, an
  upload refused before it was read) goes on being received and dropped. uvicorn's keep-alive
  timer stops at the first byte received, so a client trickling such a body held its
  connection for ever (no head to time). Here the rest of it must keep the minimum pace of an
  upstream body (rules/pace.py, over windows of header_timeout), else the connection is closed.

- **A request that is no HTTP.** What the parser refuses (a NUL or raw space in the path, a
  header name with a space, two Content-Lengths, a method that is no token) is the proxy's
  JSON 400 saying what the parser found (rules/malformed.py), not uvicorn's bare text; one
  pipelined behind a response still going out follows that response instead of landing
  inside its body.

Nothing else changes once a head is complete: request bodies keep uploads.read_timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..rules.malformed import malformed_request
from ..rules.pace import Pace
from .occupancy import occupancy
from .zerocopy import EXTENSION, offers_zero_copy, send_file

log = structlog.get_logger("condaproxy.web.connection")

# Request line and header fields together. conda, mamba, pixi and browsers send well under
# 8 KiB (nginx's default buffers take 8 KiB per line, 32 KiB in all).
MAX_HEAD = 64 * 1024
HEADER_TIMEOUT = 30.0  # server.header_timeout's default
SEND_TIMEOUT = 60.0  # server.send_timeout's default


_FULL = (
    "this proxy process has as many connections as it can hold, each with a request under way;"
    " retry"
)


def _answer(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message, "status": status}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    ).encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head (module docstring). The
    timeout comes from the app (`header_timeout`, set by create_app from the settings), so
    every worker process reads it from its own configuration.

    A head is measured twice: the bytes received while it is incomplete (what the parser may
    be holding), and the line and fields it parsed into, once complete (a head that arrived
    in one read with a previous request's body). Past MAX_HEAD either way it is a 431, and
    the request never reaches the app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = float(getattr(self.app, "header_timeout", None) or HEADER_TIMEOUT)
        self._in_head = True  # waiting for (the rest of) a request's line and fields
        self._received = 0  # bytes received while this head is incomplete
        self._parsed = 0  # bytes of request line and fields parsed
        self._head_begun = False  # a byte of this head has arrived
        self._begun_here = False  # this head began in the read being parsed
        self._message_open = False  # between a request's first byte and its body's end
        self._oversized = False  # a head past MAX_HEAD: nothing more reaches the app
        self._unparsable = False  # the parser refused what it read (send_400_response)
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timeout = float(getattr(self.app, "send_timeout", None) or SEND_TIMEOUT)
        self._send_timer: asyncio.TimerHandle | None = None  # while writing is blocked
        self._begun = self._answered = 0  # requests begun, responses completed
        self._heads = 0  # requests whose head reached the app (answered or under way)
        self._refusal: tuple[int, str, str] | None = None  # answered when the response ends
        self._unread: Pace | None = None  # the rest of an answered request's body arriving

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not occupancy().admit(self):  # every connection has a request under way
            self._in_head = False
            self.transport.write(_answer(503, "Service Unavailable", _FULL, "retry-after: 1\r\n"))
            self.transport.close()
            return
        self._await_head()

    def shed(self) -> None:
        """Closed to make room for a new connection (web/occupancy.py): this one has waited
        longest for a request head."""
        self._stop_timer()
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        occupancy().leave(self)
        self._stop_timer()
        self._stop_send_timer()
        super().connection_lost(exc)

    # No protocol switch (a websocket upgrade): the connection stays this protocol's, in the
    # connection table, with its timers; an `Upgrade` request is answered as any other.
    def _should_upgrade(self) -> bool:
        return False

    def _unsupported_upgrade_warning(self) -> None:
        """The parser stops at an upgrade request's end and parses no more requests on this
        connection: it closes after this response (a client reusing it would hang)."""
        if self.cycle is not None:
            self.cycle.keep_alive = False

    # The transport's flow control: called when its send buffer passes the high-water mark,
    # and when it drains below the low one.
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self._send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        """Nothing taken by the client for send_timeout seconds: the connection is dropped
        (the response was under way, so there is no status left to answer with); the app
        hears of it as a disconnect."""
        self._send_timer = None
        if not self.transport.is_closing():
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._oversized or self._unparsable:
            return
        if self._unread is not None and self._unread.too_slow(len(data), self.loop.time()):
            self.transport.close()  # a trickled body nobody reads: the response went out
            return
        self._begun_here = False
        super().data_received(data)
        if self.transport.is_closing() or self._unparsable:
            return
        if self._in_head:
            # A head that began in this read may follow a previous request's body in it:
            # of this read only what was parsed counts (at most a read more is held).
            self._received += self._parsed if self._begun_here else len(data)
            self._head_begun = True
            self._oversized = self._received > MAX_HEAD
        if self._oversized:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request line and header fields exceed {MAX_HEAD} bytes",
            )

    # Parser callbacks (httptools calls them inside data_received's feed).
    def on_message_begin(self) -> None:
        if self._oversized:
            return
        super().on_message_begin()
        self._begun += 1
        self._message_open = self._begun_here = self._head_begun = True
        self._received = self._parsed = 0
        if self._under_way():
            # Pipelined behind a response still going out: its clock (and the connection's
            # turn to be shed) start when that response ends (on_response_complete).
            self._in_head = True
        elif not self._in_head:
            self._await_head()

    def on_url(self, url: bytes) -> None:
        self._parsed += len(url)
        if not self._oversized:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed += len(name) + len(value) + 4  # `: ` and CRLF
        if not self._oversized:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        occupancy().busy(self)
        self._stop_timer()
        self._oversized = self._oversized or self._parsed > MAX_HEAD
        if self._oversized:
            return
        zero_copy = offers_zero_copy(self.transport)
        if zero_copy:
            self.scope["extensions"] = {**self.scope.get("extensions", {}), EXTENSION: {}}
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:
            self._heads += 1
            if zero_copy:
                self.cycle.send = _with_zero_copy(self.cycle)  # type: ignore[method-assign]

    def on_body(self, body: bytes) -> None:
        if not self._oversized:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._message_open = False
        if not self._oversized:
            super().on_message_complete()
        if self._unread is not None:  # the answered request's body is in: the next head now
            self._unread = None
            self._stop_timer()
            if not self.transport.is_closing():
                self._received, self._head_begun = 0, False
                self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._answered += 1
        if self.transport.is_closing():
            return
        # The next request's head is awaited now, unless a pipelined request is already
        # under way (its head is complete: the wait starts when its own response ends), or
        # the body of the request just answered is still arriving: then that body must keep
        # a pace, and arrive at all within header_timeout. A pipelined head still arriving
        # is timed from now (the end of the previous response), as any head.
        if self._under_way():
            return
        if self._refusal is not None:
            self._refuse(*self._refusal)
        elif self._in_head:
            self._await_head()
        elif not self._message_open:
            self._received, self._head_begun = 0, False
            self._await_head()
        elif self._answered == self._begun and not self._in_head:
            self._unread = Pace(self._header_timeout, self.loop.time())
            self._stop_timer()
            self._head_timer = self.loop.call_later(self._header_timeout, self._unread_timed_out)

    def _unread_timed_out(self) -> None:
        """Checks the pace when no byte arrives to (a body that stopped): below it, closed."""
        self._head_timer = None
        if self._unread is None or self.transport.is_closing():
            return
        if self._unread.too_slow(0, self.loop.time()):
            self.transport.close()
            return
        self._head_timer = self.loop.call_later(self._header_timeout, self._unread_timed_out)

    def _under_way(self) -> bool:
        """A request's head reached the app and its response has not ended: the connection
        is not waiting for a head (never timed out nor shed for one), whatever follows it."""
        return self._heads > self._answered

    def _await_head(self) -> None:
        self._in_head = True
        occupancy().wait(self, self._answered > 0)
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_begun:
            self._refuse(
                408,
                "Request Timeout",
                f"the request line and header fields did not arrive within "
                f"{self._header_timeout:g} s (server.header_timeout)",
            )
        else:  # a connection that never asked anything: nothing to answer
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this while handling the parser's HttpParserError (data_received):
        the JSON 400 every other bad input gets, naming what the parser refused."""
        failure = sys.exc_info()[1]
        callback = isinstance(failure, httptools.HttpParserCallbackError)
        reason = str(failure) if isinstance(failure, httptools.HttpParserError) else None
        self._unparsable = True  # the parser is past use: nothing more is fed to it
        message = malformed_request(reason, callback)
        # One warning with its cause (uvicorn's own cause-less line is dropped, web/logs.py).
        log.warning("malformed request", status=400, error=message, client=_peer(self.client))
        if self._own_body_broken():
            # The body of the last request whose head reached the app is what the parser
            # refused (a chunk size that is no number, a Transfer-Encoding that is not
            # chunked), and nothing of its answer went out: this is its answer, now (or
            # once the responses before it, pipelined, have ended). Its app hears a
            # disconnect and sends nothing (left waiting, it would wait out
            # uploads.read_timeout for a body that cannot come, then answer a 408).
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self._heads -= 1  # never answered by its app: nothing under way any more
        self._refuse(400, "Bad Request", message)

    def _own_body_broken(self) -> bool:
        """Whether the bytes just refused are the body of the last request whose head
        reached the app (running, or queued behind a pipelined response), with no byte of
        its response sent yet."""
        cycle = self.cycle
        return (
            self._message_open
            and not self._in_head
            and cycle is not None
            and not cycle.response_started
        )

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._stop_timer()
        self._in_head = False
        if self._under_way():  # a pipelined head, behind a response whose bytes are going
            # out: an answer now would land inside that body. It follows the response.
            self._refusal = (status, reason, message)
            self.flow.pause_reading()
            return
        self.transport.write(_answer(status, reason, message))
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return client[0] if client else "-"


def _with_zero_copy(cycle: Any) -> Any:
    """`cycle`'s send, taking zero-copy file messages too (web/zerocopy.py)."""
    send = cycle.send

    async def send_with_zero_copy(message: Any) -> None:
        if message["type"] == EXTENSION:
            await send_file(cycle, message, send)
        else:
            await send(message)

    return send_with_zero_copy
