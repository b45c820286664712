"""With peer_url, a replica waiting on another's download streams it from that owner as it
arrives (and verifies it), instead of waiting silently for the bucket's copy; an owner that is
gone is given up at once."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import BIG_PATH
from tests.cluster.replicas import start_peers, wait_for
from tests.support.processes import Upstream
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration


def first_byte_and_body(url: str, out: dict[str, object]) -> None:
    start = time.monotonic()
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            body = b""
            for chunk in response.iter_bytes():
                out.setdefault("first_byte", time.monotonic() - start)
                body += chunk
            out["body"], out["status"] = body, response.status_code
    except httpx.HTTPError as exc:
        out["error"] = type(exc).__name__


def owner_streaming(upstream: Upstream, a) -> tuple[bytes, dict[str, object], threading.Thread]:  # type: ignore[no-untyped-def]
    """A client of replica `a` (the owner) receiving the big file from a slow upstream (0.2 s
    per MiB, about 1.6 s in all): the file's bytes, what the client saw, its thread."""
    expected = (Path(upstream.directory) / BIG_PATH.lstrip("/")).read_bytes()
    upstream.mode("slow")
    owner: dict[str, object] = {}
    first = threading.Thread(target=first_byte_and_body, args=(f"{a.url}/local{BIG_PATH}", owner))
    first.start()
    assert wait_for(lambda: "first_byte" in owner, 20)
    return expected, owner, first


@pytest.fixture
def pair(big_upstream, started, tmp_path, s3_server, bucket, redis_server):  # type: ignore[no-untyped-def]
    """Two peers sharing the bucket and Redis, their repodata warm; the dead owner's lease
    is long (30 s), so giving up on it at once is visible."""
    a, b = start_peers(
        started,
        big_upstream.url,
        tmp_path,
        s3_server,
        bucket,
        redis_server.url,
        cluster={"lease": 30, "peer_timeout": 1},
    )
    for proxy in (a, b):
        assert httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=30).is_success
    return a, b


def test_a_waiting_replica_streams_the_owners_download_as_it_arrives(
    big_upstream: Upstream, pair
) -> None:
    a, b = pair
    expected, owner, first = owner_streaming(big_upstream, a)
    waiter: dict[str, object] = {}
    second = threading.Thread(target=first_byte_and_body, args=(f"{b.url}/local{BIG_PATH}", waiter))
    second.start()
    first.join(60)
    second.join(60)
    assert owner["body"] == expected and waiter["body"] == expected
    assert big_upstream.count("GET", BIG_PATH) == 1
    # The waiter had bytes long before the owner finished (it did not wait for the bucket).
    assert float(waiter["first_byte"]) < 1.0, waiter["first_byte"]  # type: ignore[arg-type]
    assert "peer" not in b.log() or "fetching ourselves" not in b.log()


def test_a_waiter_whose_owner_is_gone_fetches_at_once_instead_of_waiting_out_the_lease(
    big_upstream: Upstream, pair
) -> None:
    a, b = pair
    expected, owner, first = owner_streaming(big_upstream, a)
    a.stop(kill=True)  # its lease (30 s) outlives it
    first.join(30)
    assert owner.get("body") != expected
    big_upstream.mode("ok")
    start = time.monotonic()
    got = httpx.get(f"{b.url}/local{BIG_PATH}", timeout=60)
    assert got.status_code == 200 and got.content == expected
    assert time.monotonic() - start < 5, "waited out the dead owner's lease"


def test_an_owner_paused_past_its_lease_is_given_up_and_resumes_without_harm(
    big_upstream: Upstream, pair, s3_server: S3Server, bucket: str
) -> None:
    a, b = pair
    expected, owner, first = owner_streaming(big_upstream, a)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGSTOP)  # a GC pause, a frozen node
    try:
        start = time.monotonic()
        waiter: dict[str, object] = {}
        first_byte_and_body(f"{b.url}/local{BIG_PATH}", waiter)
        if waiter.get("body") != expected:  # it had joined the paused owner: aborted, retry
            assert "error" in waiter or len(waiter.get("body", b"")) < len(expected)  # type: ignore[arg-type]
            waiter = {}
            first_byte_and_body(f"{b.url}/local{BIG_PATH}", waiter)
        assert waiter["body"] == expected
        assert time.monotonic() - start < 15
    finally:
        os.killpg(a.proc.pid, signal.SIGCONT)
    first.join(60)
    assert owner.get("body") in (expected, None)  # the owner finishes too, or its client gave up
    sha = hashlib.sha256(expected).hexdigest()
    assert wait_for(lambda: f"prod/cas/sha256/{sha[:2]}/{sha}" in s3_server.keys(bucket), 20)
    client = s3_server.client()
    for key in s3_server.keys(bucket, "prod/cas/"):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1], key
