"""Reading upload bodies off the ASGI connection: counted against the limit whatever the
framing, cut when the client stops sending or hangs up, multipart parts sent to their sinks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from condaproxy.rules.errors import BadRequest
from condaproxy.web.bodies import (
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    FileParts,
    body_chunks,
    check_declared_length,
)


def receiver(messages: Iterable[dict[str, Any]], then_stall: bool = False):
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if then_stall:
            await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError("read past the end of the body")

    return receive


async def read(receive, limit: int = 100, timeout: float = 5.0) -> list[bytes]:
    return [chunk async for chunk in body_chunks(receive, limit, timeout)]


async def test_pieces_arrive_as_sent_and_empty_ones_are_skipped():
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]
    assert await read(receiver(messages)) == [b"ab", b"cd"]


async def test_a_body_growing_past_the_limit_is_cut_at_the_limit():
    messages = [{"type": "http.request", "body": b"x" * 60, "more_body": True}] * 2
    with pytest.raises(BodyTooLarge) as refused:
        await read(receiver(messages), limit=100)
    assert refused.value.extra == {"max_upload_size": 100}
    assert refused.value.headers == {"connection": "close"}


async def test_a_client_that_stops_sending_is_cut_after_the_read_timeout():
    messages = [{"type": "http.request", "body": b"x", "more_body": True}]
    with pytest.raises(BodyTimeout, match=r"nothing arrived for 0\.01 s") as cut:
        await asyncio.wait_for(read(receiver(messages, then_stall=True), timeout=0.01), 5)
    assert cut.value.status == 408 and cut.value.extra == {"read_timeout": 0.01}


async def test_a_client_that_hangs_up_mid_body_is_client_gone():
    messages = [
        {"type": "http.request", "body": b"x", "more_body": True},
        {"type": "http.disconnect"},
    ]
    with pytest.raises(ClientGone):
        await read(receiver(messages))


@pytest.mark.parametrize(
    ("length", "refused"), [("101", True), ("100", False), ("", False), ("-5", False)]
)
def test_a_declared_length_over_the_limit_is_refused_at_once(length, refused):
    if refused:
        with pytest.raises(BodyTooLarge):
            check_declared_length({"content-length": length}, 100)
    else:
        check_declared_length({"content-length": length}, 100)


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def test_file_parts_go_to_their_sinks_in_pieces_and_other_fields_are_skipped():
    sinks: dict[str, Sink] = {}

    def open_sink(name: str) -> Sink:
        sinks[name] = Sink()
        return sinks[name]

    body = (
        b'--XX\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="files"; filename="a-1-0.conda"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"A" * 1000 + b"\r\n"
        b'--XX\r\nContent-Disposition: form-data; name="files"; filename="b-1-0.conda"\r\n\r\n'
        b"BB\r\n--XX--\r\n"
    )
    parts = FileParts("multipart/form-data; boundary=XX", "files", open_sink, 5)
    for i in range(0, len(body), 7):  # any split of the body
        parts.feed(body[i : i + 7])
    parts.finish()
    assert {k: v.data for k, v in sinks.items()} == {
        "a-1-0.conda": b"A" * 1000,
        "b-1-0.conda": b"BB",
    }
    assert parts.files == 2


def test_a_body_that_ends_early_is_refused_by_finish():
    parts = FileParts("multipart/form-data; boundary=XX", "files", lambda _: Sink(), 5)
    parts.feed(b'--XX\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n\r\nA')
    with pytest.raises(BadRequest, match="before its closing boundary"):
        parts.finish()
