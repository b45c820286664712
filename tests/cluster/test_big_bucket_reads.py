"""An L2 hit of a file big enough to go through L1's temp file (8 MiB: several reads from the
bucket, the last byte held back by the reader of the temp file): whatever the bucket sends,
the client never gets a complete body that was not verified, and the next request succeeds.

The store is moto, reached by one replica through a forwarding store that sends the first
GET of each big blob cut in half (its full Content-Length announced, then the connection
closed).
"""

from __future__ import annotations

import hashlib
import http.server
import socket
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import BIG_PATH
from tests.cluster.replicas import start_replicas, wait_for
from tests.support.processes import Upstream
from tests.support.s3 import Forwarder, S3Server

pytestmark = pytest.mark.integration

BIG_ONLY = 1 << 20  # the package, not the small shards the lookup of its record reads


class CuttingStore(Forwarder):
    """Forwards to `target`; the first GET of each blob (`/cas/`) over `bigger_than` bytes
    is cut in half."""

    PROTOCOL = "HTTP/1.1"

    def __init__(self, target: str, bigger_than: int = BIG_ONLY) -> None:
        super().__init__(target)
        self.bigger_than = bigger_than
        self.cut: list[str] = []

    def reply(self, handler: http.server.BaseHTTPRequestHandler, got: httpx.Response) -> None:
        cut = (
            handler.command == "GET"
            and "/cas/" in handler.path
            and got.status_code == 200
            and len(got.content) > self.bigger_than
            and handler.path not in self.cut
        )
        if not cut:
            super().reply(handler, got)
            return
        self.cut.append(handler.path)
        handler.send_response(got.status_code)
        for k, v in got.headers.items():
            if k.lower() not in self.DROPPED:
                handler.send_header(k, v)
        handler.send_header("content-length", str(len(got.content)))
        handler.end_headers()
        handler.wfile.write(got.content[: len(got.content) // 2])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True


def published(upstream: Upstream) -> tuple[bytes, str]:
    """The big package's bytes as the channel publishes them, and its bucket key."""
    expected = (upstream.directory / BIG_PATH.lstrip("/")).read_bytes()
    sha = hashlib.sha256(expected).hexdigest()
    return expected, f"prod/cas/sha256/{sha[:2]}/{sha}"


def in_bucket_through(proxy, upstream: Upstream, s3: S3Server, bucket: str) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
    expected, key = published(upstream)
    got = httpx.get(f"{proxy.url}/local{BIG_PATH}", timeout=60)
    assert got.status_code == 200 and got.content == expected
    assert wait_for(lambda: key in s3.keys(bucket), 30), s3.keys(bucket)
    return expected, key


def received(url: str) -> tuple[int, bool]:
    """Bytes a client got, and whether its response completed."""
    size = 0
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            for chunk in response.iter_raw():
                size += len(chunk)
        return size, True
    except httpx.HTTPError:
        return size, False


def test_an_object_the_store_cuts_short_is_aborted_and_the_next_request_succeeds(
    big_upstream: Upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    (a,) = start_replicas(start_proxy, big_upstream.url, tmp_path / "a", s3_server, bucket, 1)
    expected, _ = in_bucket_through(a, big_upstream, s3_server, bucket)
    with CuttingStore(s3_server.url) as cutting:
        lossy = S3Server(port=cutting.port)
        (b,) = start_replicas(start_proxy, big_upstream.url, tmp_path / "b", lossy, bucket, 1)
        size, complete = received(f"{b.url}/local{BIG_PATH}")
        assert cutting.cut, "the bucket's copy was not read"  # it was an L2 read
        assert not complete and size < len(expected)
        again = httpx.get(f"{b.url}/local{BIG_PATH}", timeout=60)
        assert again.status_code == 200 and again.content == expected


def test_a_corrupt_big_object_is_never_served_whole_and_is_deleted(
    big_upstream: Upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    a, b = start_replicas(start_proxy, big_upstream.url, tmp_path, s3_server, bucket, 2)
    expected, key = in_bucket_through(a, big_upstream, s3_server, bucket)
    forged = bytearray(expected)
    forged[len(forged) // 2] ^= 0xFF  # same size, other bytes in the middle
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=bytes(forged))
    size, complete = received(f"{b.url}/local{BIG_PATH}")
    assert not complete and size < len(expected)  # aborted: the last byte never went out
    assert wait_for(lambda: key not in s3_server.keys(bucket), 30), "corrupt object kept"
    again = httpx.get(f"{b.url}/local{BIG_PATH}", timeout=60)
    assert again.status_code == 200 and again.content == expected
    assert big_upstream.count("GET", BIG_PATH) == 2  # A's fetch, and B's after the deletion


SMALL_PATH = "/linux-64/datatool-1.0-h2.conda"


def test_a_small_object_the_store_cuts_short_is_fetched_from_upstream_instead(
    upstream: Upstream,
    start_proxy,
    tmp_path: Path,
    s3_server: S3Server,
    bucket: str,
    channel_dir: Path,
) -> None:
    """A small file (and the shard its record is looked up in) is read whole from the bucket
    before its download starts: a store failing mid-body costs an upstream fetch, never the
    client's request."""
    (a,) = start_replicas(start_proxy, upstream.url, tmp_path / "a", s3_server, bucket, 1)
    expected = (channel_dir / SMALL_PATH.lstrip("/")).read_bytes()
    sha = hashlib.sha256(expected).hexdigest()
    assert httpx.get(f"{a.url}/local{SMALL_PATH}", timeout=30).content == expected
    key = f"prod/cas/sha256/{sha[:2]}/{sha}"
    assert wait_for(lambda: key in s3_server.keys(bucket), 30), s3_server.keys(bucket)
    with CuttingStore(s3_server.url, bigger_than=0) as cutting:
        lossy = S3Server(port=cutting.port)
        (b,) = start_replicas(start_proxy, upstream.url, tmp_path / "b", lossy, bucket, 1)
        got = httpx.get(f"{b.url}/local{SMALL_PATH}", timeout=30)
        assert cutting.cut, "the bucket's copy was not read"
        assert got.status_code == 200 and got.content == expected
    assert key in s3_server.keys(bucket)  # cut on the way, not corrupt: kept
