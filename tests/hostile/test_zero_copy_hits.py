"""Cache hits sent by sendfile(2) (web/zerocopy.py), against a real proxy: clients that hang up
in the middle of a body, pipeline hits, misses, ranges and HEADs on one connection, and a blob
cut short on disk while it is being served.

A client that hung up while its hit was going out made sendfile fail (EPIPE, ECONNRESET): the
connection was aborted, but the response was left unfinished on a connection uvicorn did not
yet know was gone, and it logged an error ("ASGI callable returned without completing
response") for each such client, an ordinary event (a cancelled `conda install`, a
timed-out mirror check). The rest holds and is kept here: bytes in order, exactly the stored
ones or a connection cut short, descriptors given back, the access log's byte counts."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hostile import HostileSetup, wait_for

pytestmark = pytest.mark.integration

SIZES = {"empty": 0, "piece": 256 << 10, "over": (256 << 10) + 1, "mib": 1 << 20, "big": 24 << 20}
FILES = {f"linux-64/{name}-1.0-0.conda": os.urandom(size) for name, size in SIZES.items()}


def _path(name: str) -> str:
    return f"linux-64/{name}-1.0-0.conda"


setup = HostileSetup.fixture("zero-copy", FILES)


@pytest.fixture(scope="module")
def proxy(setup: HostileSetup) -> Iterator[HostileSetup]:
    for path, data in FILES.items():  # every request below is a hit
        assert setup.get(path).content == data
    yield setup


def _descriptors(setup: HostileSetup) -> int:
    assert setup.proxy.proc is not None
    return len(os.listdir(f"/proc/{setup.proxy.proc.pid}/fd"))


def _request(name: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} /ch/{_path(name)} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        got = bytearray()
        while chunk := sock.recv(1 << 20):
            got += chunk
    return bytes(got)


def _responses(stream: bytes, heads: list[bool]) -> list[tuple[int, bytes]]:
    """(status, body) of each response; `heads[i]`: the i-th answered a HEAD (no body)."""
    found = []
    for head_only in heads:
        head, _, stream = stream.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = 0 if head_only else int(fields.get(b"content-length", b"0"))
        assert len(stream) >= length, f"cut short: {lines[0]!r}"
        found.append((int(lines[0].split()[1]), stream[:length]))
        stream = stream[length:]
    assert stream == b"", f"{len(stream)} bytes more than the responses: {stream[:100]!r}"
    return found


def _errors(setup: HostileSetup) -> list[str]:
    return [line for line in setup.proxy.log().splitlines() if '"level":"error"' in line]


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
@pytest.mark.parametrize("name", ["over", "mib", "big"])
def test_a_client_hanging_up_mid_body_leaves_no_error_nor_descriptor(proxy, name, reset):
    errors, before = len(_errors(proxy)), _descriptors(proxy)
    for attempt in range(12):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", proxy.proxy.port))
        sock.sendall(_request(name))
        sock.recv(1000 + attempt * 4000)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    wait_for(lambda: _descriptors(proxy) <= before, 10, "descriptors given back")
    time.sleep(0.3)
    assert _errors(proxy)[errors:] == []
    data = FILES[_path(name)]  # and the next client is served as ever
    assert hashlib.sha256(proxy.get(_path(name)).content).digest() == hashlib.sha256(data).digest()


def _etag(name: str) -> str:
    digest = hashlib.sha256(FILES[_path(name)]).hexdigest()
    return f'"{digest}"'


PIPELINES = {
    "unchanged-hit": [("mib", "GET", f"If-None-Match: {_etag('mib')}\r\n"), ("over", "GET", "")],
    "if-range": [
        ("mib", "GET", f"Range: bytes=0-9\r\nIf-Range: {_etag('mib')}\r\n"),
        ("mib", "GET", 'Range: bytes=0-9\r\nIf-Range: "other"\r\n'),
        ("empty", "GET", ""),
    ],
    "hit-hit-hit": [("mib", "GET", ""), ("piece", "GET", ""), ("empty", "GET", "")],
    "hit-miss-hit": [("mib", "GET", ""), ("absent", "GET", ""), ("over", "GET", "")],
    "range-full": [("mib", "GET", "Range: bytes=100-200\r\n"), ("mib", "GET", "")],
    "head-get-head": [("big", "HEAD", ""), ("over", "GET", ""), ("mib", "HEAD", "")],
    "suffix-multi": [
        ("over", "GET", "Range: bytes=-5\r\n"),
        ("piece", "GET", "Range: bytes=0-1,5-9\r\n"),
    ],
    "big-small": [("big", "GET", ""), ("piece", "GET", "")],
}


def _expected(name: str, extra: str) -> tuple[int, bytes]:
    if name == "absent":
        return 404, b""
    data = FILES[_path(name)]
    if "If-None-Match" in extra:
        return 304, b""
    if '"other"' in extra:  # If-Range of another version: the whole file
        return 200, data
    if "=0-9" in extra:
        return 206, data[:10]
    if "=100-200" in extra:
        return 206, data[100:201]
    if "=-5" in extra:
        return 206, data[-5:]
    return 200, data


@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_pipelined_hits_arrive_whole_and_in_order(proxy, pipeline, version):
    steps = PIPELINES[pipeline]
    requests = b""
    for i, (name, method, extra) in enumerate(steps):
        last = i == len(steps) - 1
        keep = "Connection: close\r\n" if last else "Connection: keep-alive\r\n"
        requests += _request(name, method, extra + keep).replace(
            b"HTTP/1.1", f"HTTP/{version}".encode(), 1
        )
    if version == "1.0":  # uvicorn answers the first and closes (keep-alive is optional)
        steps = steps[:1]
    got = _responses(_exchange(proxy.proxy.port, requests), [m == "HEAD" for _, m, _ in steps])
    for (name, method, extra), (status, body) in zip(steps, got, strict=True):
        want_status, want_body = _expected(name, extra)
        assert status == want_status, (name, extra)
        if name != "absent":
            assert body == (b"" if method == "HEAD" else want_body), (name, method, extra)


def _blob(setup: HostileSetup, data: bytes) -> Path:
    cache = Path(setup.proxy.config).parent / "cache" / "blobs"
    return next(cache.rglob(hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize("change", ["truncated", "replaced"])
def test_a_blob_changed_on_disk_while_served_sends_only_stored_bytes(proxy, change):
    data = FILES[_path("big")]
    blob = _blob(proxy, data)
    kept = blob.read_bytes()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(("127.0.0.1", proxy.proxy.port))
    try:
        sock.sendall(_request("big", extra="Connection: close\r\n"))
        got = bytearray(sock.recv(1 << 16))
        time.sleep(0.2)
        if change == "truncated":
            os.truncate(blob, len(data) // 3)
        else:  # a new file renamed over it: the open one is still what is served
            other = blob.with_name("other")
            other.write_bytes(os.urandom(len(data)))
            other.rename(blob)
        sock.settimeout(30)
        try:
            while chunk := sock.recv(1 << 20):
                got += chunk
        except ConnectionResetError:
            pass
    finally:
        sock.close()
        blob.write_bytes(kept)
    body = bytes(got).partition(b"\r\n\r\n")[2]
    if change == "truncated":
        assert len(body) < len(data) and data.startswith(body)
    else:
        assert body == data


def test_the_access_log_counts_the_bytes_sent(proxy):
    proxy.get(_path("mib"))
    ranged = proxy.client.get(
        f"{proxy.proxy.url}/ch/{_path('big')}", headers={"range": "bytes=10-1048585"}
    )
    assert ranged.status_code == 206 and len(ranged.content) == 1 << 20
    time.sleep(0.3)
    counted = [
        (entry["status"], entry["bytes"])
        for entry in map(json.loads, proxy.proxy.log().splitlines()[-20:])
        if entry.get("event") == "request" and entry.get("cache") == "hit"
    ]  # every line of the log is a JSON event
    assert counted[-2:] == [(200, 1 << 20), (206, 1 << 20)]


@pytest.mark.parametrize("rhythm", ["trickle", "stop-and-go"])
@pytest.mark.parametrize("name", ["over", "mib", "big"])
def test_a_reader_that_stops_and_resumes_gets_the_stored_bytes_in_order(proxy, name, rhythm):
    """Each time the client's socket fills, the next piece goes through the transport and
    sendfile resumes once it is flushed: the body is the stored bytes, whole and in order,
    across every switch."""
    data = FILES[_path(name)]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", proxy.proxy.port))
    got = bytearray()
    try:
        sock.sendall(_request(name, extra="Connection: close\r\n"))
        sock.settimeout(30)
        reads = 0
        while chunk := sock.recv(1 << 16):
            got += chunk
            reads += 1
            if rhythm == "trickle":
                time.sleep(0.001)
            elif reads % 50 == 0:
                time.sleep(0.15)
    finally:
        sock.close()
    body = bytes(got).partition(b"\r\n\r\n")[2]
    assert len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
