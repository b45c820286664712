"""Stored files sent with sendfile(2): ASGI's zero-copy send extension, on our connections.

A cache hit read each 256 KiB piece of its file into a new bytes object (pread), and uvicorn
copied it into the socket: in a profile of cached 1 MiB hits that was 56 % of the worker's
time, where nginx hands the kernel the file. Connections of web/connection.py offer the
extension (`http.response.zerocopysend` in the scope's extensions, as the ASGI spec names it),
and responses.FileResponse uses it: the kernel copies the page cache into the socket.

The rules that keep it right:
- bytes go to the socket in order: sendfile runs only while the transport holds nothing
  unsent (the head, or a piece written below);
- when the socket is full (a slow client), the next piece goes through the transport as
  before, so flow control, `server.send_timeout` and the memory bound of a stalled reader
  (one piece) are the same as for any body;
- the response's Content-Length is kept as uvicorn keeps it: the completion (and a body
  longer or shorter than announced) is uvicorn's own send, given an empty last piece;
- a HEAD, a chunked body or a connection that is not a plain socket (TLS) never uses it.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

EXTENSION = "http.response.zerocopysend"
PIECE = 256 << 10  # through the transport when the socket is full (responses.PIECE)
# sendfile refused for this file or socket (a filesystem without splice support): the body
# goes through the transport in pieces, as it did before sendfile.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
# The client is gone; any other error is the file's (EIO), and fails the response as a read
# would.
_GONE = {errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ETIMEDOUT}


def offers_zero_copy(transport: Any) -> bool:
    """Whether sendfile can write this connection's bytes: a plain socket, no TLS layer."""
    sock = transport.get_extra_info("socket")
    return sock is not None and transport.get_extra_info("sslcontext") is None


async def send_file(cycle: Any, message: dict[str, Any], send: Any) -> None:
    """Send `count` bytes of `file` from `offset` as part of `cycle`'s response body (a
    uvicorn RequestResponseCycle whose head is out); `send` is the cycle's own send, which
    completes the response. Raises OSError if the file holds fewer bytes than asked."""
    fd, offset = message["file"], message.get("offset", 0)
    count = message.get("count")
    end = offset + count if count is not None else os.fstat(fd).st_size
    more = message.get("more_body", False)
    transport, flow = cycle.transport, cycle.flow
    if flow.write_paused and not cycle.disconnected:
        await flow.drain()
    if cycle.disconnected:
        return
    if cycle.scope["method"] == "HEAD" or cycle.chunked_encoding or not cycle.response_started:
        # uvicorn's own rules for these (and its error for a body before the head).
        while offset < end:
            piece = _read(fd, offset, end)
            offset += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": more})
        return
    if end - offset > cycle.expected_content_length:
        raise RuntimeError("Response content longer than Content-Length")
    sock = transport.get_extra_info("socket").fileno()
    zero_copy = True
    while offset < end:
        if cycle.disconnected:
            return
        sent = 0
        if zero_copy and transport.get_write_buffer_size() == 0:
            try:
                sent = os.sendfile(sock, fd, offset, end - offset)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:
                    zero_copy = False
                    continue
                if exc.errno not in _GONE:
                    raise
                # The client is gone: so is the response, as uvicorn's send would have it;
                # the transport hears of it only later, and an unfinished response on a live
                # connection is an error to uvicorn.
                cycle.disconnected = True
                transport.abort()
                return
            else:
                if sent == 0:
                    raise OSError("file shrank while being served")
        if sent == 0:  # the socket is full, or holds the transport's bytes: one piece
            piece = _read(fd, offset, end)
            transport.write(piece)
            sent = len(piece)
        offset += sent
        cycle.expected_content_length -= sent
        if flow.write_paused and not cycle.disconnected:
            await flow.drain()
        elif transport.get_write_buffer_size():
            await asyncio.sleep(0)  # let the transport flush, then sendfile again
    await send({"type": "http.response.body", "body": b"", "more_body": more})


def _read(fd: int, offset: int, end: int) -> bytes:
    piece = os.pread(fd, min(PIECE, end - offset), offset)
    if not piece:
        raise OSError("file shrank while being served")
    return piece
