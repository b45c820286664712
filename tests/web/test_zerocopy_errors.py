"""How web/zerocopy.send_file takes sendfile's failures: a file or socket sendfile cannot
serve (EINVAL, ENOSYS, EOPNOTSUPP: a filesystem without splice support) still gets its body,
in pieces through the transport; a client gone (EPIPE, ECONNRESET) is a disconnect; a failing
file (EIO) fails the response, as a read would. Every error was taken for a hang-up: on such
a filesystem every hit was cut after its head, and nothing was logged."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from condaproxy.web import zerocopy

DATA = os.urandom(700_000)


class _Flow:
    write_paused = False

    async def drain(self) -> None:
        raise AssertionError("never paused here")


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.written, self.aborted = sock, bytearray(), False

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


class _Cycle:
    def __init__(self, sock: socket.socket) -> None:
        self.transport, self.flow = _Transport(sock), _Flow()
        self.disconnected, self.response_started, self.chunked_encoding = False, True, False
        self.scope = {"method": "GET"}
        self.expected_content_length = len(DATA)
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> _Cycle:
    def refuse(*args: Any) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(zerocopy.os, "sendfile", refuse)
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    left, right = socket.socketpair()
    cycle = _Cycle(left)
    message = {"type": zerocopy.EXTENSION, "file": fd, "offset": 0, "count": len(DATA)}
    try:
        asyncio.run(zerocopy.send_file(cycle, message, cycle.send))
    finally:
        os.close(fd)
        left.close()
        right.close()
    return cycle


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_a_file_sendfile_cannot_serve_goes_out_in_pieces(tmp_path, monkeypatch, code):
    cycle = _run(tmp_path, monkeypatch, code)
    assert bytes(cycle.transport.written) == DATA and not cycle.transport.aborted
    assert cycle.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


@pytest.mark.parametrize("code", [errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN])
def test_a_client_gone_is_a_disconnect(tmp_path, monkeypatch, code):
    cycle = _run(tmp_path, monkeypatch, code)
    assert cycle.disconnected and cycle.transport.aborted and cycle.sent == []


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOMEM])
def test_a_failing_file_fails_the_response(tmp_path, monkeypatch, code):
    with pytest.raises(OSError) as raised:
        _run(tmp_path, monkeypatch, code)
    assert raised.value.errno == code
