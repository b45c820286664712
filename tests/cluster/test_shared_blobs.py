"""Replicas sharing one bucket: a file fetched and verified by one is served by another
without the upstream, and nothing unverified ever enters or leaves the bucket."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import start_replicas, wait_for
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

PKG = "/linux-64/datatool-1.0-h2.conda"


def replicas(start_proxy, upstream, tmp_path: Path, s3: S3Server, bucket: str):  # type: ignore[no-untyped-def]
    return start_replicas(start_proxy, upstream.url, tmp_path, s3, bucket, 2)


def fetched_through(proxy, s3: S3Server, bucket: str, channel_dir: Path) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
    """The package fetched through one replica and in the bucket: its bytes and bucket key."""
    expected = (channel_dir / PKG.lstrip("/")).read_bytes()
    sha = hashlib.sha256(expected).hexdigest()
    got = httpx.get(f"{proxy.url}/local{PKG}", timeout=30)
    assert got.status_code == 200 and got.content == expected
    key = f"prod/cas/sha256/{sha[:2]}/{sha}"
    assert wait_for(lambda: key in s3.keys(bucket)), s3.keys(bucket)
    return expected, key


def test_a_file_one_replica_fetched_is_served_by_another_without_the_upstream(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str, channel_dir: Path
) -> None:
    a, b = replicas(start_proxy, upstream, tmp_path, s3_server, bucket)
    expected, _ = fetched_through(a, s3_server, bucket, channel_dir)
    second = httpx.get(f"{b.url}/local{PKG}", timeout=30)
    assert second.status_code == 200 and second.content == expected
    assert upstream.count("GET", PKG) == 1
    # B now holds it in its own L1: a hit, even with the bucket gone quiet.
    third = httpx.get(f"{b.url}/local{PKG}", timeout=30)
    assert third.headers["x-cache"] == "HIT"


def test_a_corrupt_object_in_the_bucket_is_never_served_whole_and_is_deleted(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str, channel_dir: Path
) -> None:
    a, b = replicas(start_proxy, upstream, tmp_path, s3_server, bucket)
    expected, key = fetched_through(a, s3_server, bucket, channel_dir)
    forged = bytearray(expected)
    forged[len(forged) // 2] ^= 0xFF  # same size, other bytes
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=bytes(forged))
    try:
        got = httpx.get(f"{b.url}/local{PKG}", timeout=30)
        complete_wrong = got.content == bytes(forged)
    except httpx.HTTPError:
        complete_wrong = False  # aborted: the held-back last byte never went out
    assert not complete_wrong
    assert wait_for(lambda: key not in s3_server.keys(bucket)), "corrupt object not deleted"
    again = httpx.get(f"{b.url}/local{PKG}", timeout=30)
    assert again.status_code == 200 and again.content == expected
    assert upstream.count("GET", PKG) == 2  # A's fetch, and B's refetch after the deletion
