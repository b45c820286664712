"""A client whose request is no HTTP/1.1 the server can parse, against a real proxy: a NUL,
raw space or non-ASCII byte in the path, a control character or a space where a header
belongs, a method that is no token, two Content-Lengths, both framings at once, `CONNECT`,
a TLS handshake sent to the plain port. Each is bad input like any other: a JSON 400 saying
what the parser refused (never uvicorn's bare `Invalid HTTP request received.` text), the
connection closed, and nothing of the request echoed. A malformed request pipelined behind
a good one does not cut the good one's answer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import listed_channel, no_crash_in_log, read_until_closed
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

SECRET = b"s3cr3t-in-the-request"
PACKAGE = "linux-64/tool-1.0-0.conda"
BYTES = b"tool package bytes " * 50
END = b"Host: proxy\r\nConnection: close\r\n\r\n"
ADMIN = "admin-token-86420"

MALFORMED = {
    "nul-in-path": b"GET /pub/linux-64/" + SECRET + b"\x00.conda HTTP/1.1\r\n" + END,
    "control-in-path": b"GET /pub/linux-64/\x01" + SECRET + b" HTTP/1.1\r\n" + END,
    "del-in-path": b"GET /pub/\x7f/repodata.json HTTP/1.1\r\n" + END,
    "raw-utf8-in-path": "GET /pub/linux-64/é.conda HTTP/1.1\r\n".encode() + END,
    "raw-space-in-path": b"GET /pub/linux-64/a b.conda HTTP/1.1\r\n" + END,
    "tab-in-path": b"GET /pub/linux-64/a\tb HTTP/1.1\r\n" + END,
    "nul-in-header": b"GET /pub/ HTTP/1.1\r\nX-Api-Key: " + SECRET + b"\x00\r\n" + END,
    "space-in-header-name": b"GET /pub/ HTTP/1.1\r\nX Api Key: " + SECRET + b"\r\n" + END,
    "obs-fold": b"GET /pub/ HTTP/1.1\r\nX-A: a\r\n folded\r\n" + END,
    "method-not-a-token": b"G@T /pub/ HTTP/1.1\r\n" + END,
    "unknown-method": b"FOO /pub/ HTTP/1.1\r\n" + END,
    "relative-path": b"GET pub/noarch/repodata.json HTTP/1.1\r\n" + END,
    "connect": b"CONNECT evil.example:443 HTTP/1.1\r\n" + END,
    "bad-content-length": b"POST /api/cache/pub/linux-64/prefetch HTTP/1.1\r\n"
    b"Content-Length: 1e3\r\n" + END,
    "two-content-lengths": b"POST /api/channels/pub/files HTTP/1.1\r\nContent-Length: 3\r\n"
    b"Content-Length: 4\r\n" + END + b"abcd",
    "length-and-chunked": b"POST /api/channels/pub/files HTTP/1.1\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n" + END + b"0\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + SECRET,
}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("malformed-http")
    upstream = Upstream(listed_channel(base / "channel", {PACKAGE: BYTES})).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}, "team": {}},
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
        extra="[uploads]\nread_timeout = 20\n",
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


def exchange(proxy: Proxy, data: bytes) -> bytes:
    """Send `data` as is; everything the proxy answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_the_parser_refuses_is_a_json_400_naming_why(proxy, request_bytes):
    logged = len(proxy.events())
    refusals = sum(e.get("event") == "malformed request" for e in proxy.events())
    status, headers, body = split(exchange(proxy, request_bytes))
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert int(headers["content-length"]) == len(body)  # then the connection closed
    answer = json.loads(body)
    assert answer["status"] == 400
    assert answer["error"].startswith("malformed HTTP/1.1 request: ")
    assert SECRET.decode() not in answer["error"]
    assert SECRET.decode() not in proxy.log()
    no_crash_in_log(proxy.log())
    # Logged as one warning with its cause (README, Logs), not uvicorn's cause-less line.
    proxy.events_where(lambda e: e.get("event") == "malformed request", refusals + 1)
    warnings = [e for e in proxy.events()[logged:] if e.get("level") == "warning"]
    assert [(e["event"], e["error"]) for e in warnings] == [("malformed request", answer["error"])]


def test_a_malformed_request_pipelined_behind_a_good_one_follows_its_whole_answer(proxy):
    good = f"GET /pub/{PACKAGE} HTTP/1.1\r\nHost: proxy\r\n\r\n".encode()
    answer = exchange(proxy, good + MALFORMED["nul-in-header"])
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), answer[:200]
    assert rest[: len(BYTES)] == BYTES  # the package whole, nothing inside it
    status, _, body = split(rest[len(BYTES) :])
    assert status == 400
    assert json.loads(body)["error"].startswith("malformed HTTP/1.1 request: ")


def test_well_formed_requests_on_the_same_port_still_work(proxy):
    good = f"GET /pub/{PACKAGE} HTTP/1.1\r\n".encode() + END
    status, _, body = split(exchange(proxy, good))
    assert status == 200
    assert body == BYTES


# A head the app takes, then a body the parser refuses: the request under way is answered
# at once (it waited out uploads.read_timeout for a body that could never come, then got a
# 408 with the 400 behind it).
AUTHORIZED = f"X-API-Key: {ADMIN}\r\nHost: proxy\r\n".encode()
BROKEN_BODIES = {
    "transfer-coding-not-chunked": b"Transfer-Encoding: gzip\r\n\r\n" + b'["pyutil"]',
    "chunk-size-not-hex": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n" + b"f" * 20 + b"\r\n",
    "chunk-without-crlf": b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]XX0\r\n\r\n",
}
ROUTES = {
    "prefetch": b"POST /api/cache/pub/linux-64/prefetch HTTP/1.1\r\n",
    "upload": b"POST /api/channels/team/upload/tool-1.0-0.conda HTTP/1.1\r\n",
    "multipart": b"POST /api/channels/team/files HTTP/1.1\r\n"
    b"Content-Type: multipart/form-data; boundary=xyz\r\n",
}


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
@pytest.mark.parametrize("body", BROKEN_BODIES.values(), ids=BROKEN_BODIES.keys())
def test_a_body_the_parser_refuses_is_answered_at_once(proxy, route, body):
    started = time.monotonic()
    answer = exchange(proxy, route + AUTHORIZED + body)
    assert time.monotonic() - started < 5, "answered only after a timeout"
    status, headers, text = split(answer)
    assert status == 400, answer
    assert headers["content-type"] == "application/json"
    assert answer.count(b"\r\n\r\n") == 1  # that one answer, nothing behind it
    assert json.loads(text)["error"].startswith("malformed HTTP/1.1 request: ")
    listed = exchange(
        proxy,
        b"GET /api/channels/team/packages HTTP/1.1\r\n" + AUTHORIZED + b"Connection: close\r\n\r\n",
    )
    assert json.loads(split(listed)[2])["packages"] == []  # nothing half-uploaded


@pytest.mark.parametrize("body", BROKEN_BODIES.values(), ids=BROKEN_BODIES.keys())
def test_a_broken_body_pipelined_behind_a_download_follows_its_whole_answer(proxy, body):
    good = f"GET /pub/{PACKAGE} HTTP/1.1\r\nHost: proxy\r\n\r\n".encode()
    started = time.monotonic()
    answer = exchange(proxy, good + ROUTES["prefetch"] + AUTHORIZED + body)
    assert time.monotonic() - started < 5, "answered only after a timeout"
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), answer[:200]
    assert rest[: len(BYTES)] == BYTES
    status, _, text = split(rest[len(BYTES) :])
    assert status == 400
    assert json.loads(text)["error"].startswith("malformed HTTP/1.1 request: ")
