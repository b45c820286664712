"""/metrics tells an operator how the shared tier is doing: reads of the bucket by result (a
replica's L1 miss served from the bucket is a hit), blobs copied to it, and whether the store
answers (condaproxy_shared_up). Real replicas on a real moto bucket."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import start_replicas, wait_for
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

PACKAGE = "/linux-64/libzlib-1.3-h0.conda"


def sample(url: str, name: str, labels: str) -> float | None:
    """One sample of /metrics, or None if the series is absent."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def test_shared_reads_writes_and_the_store_being_down_show_in_metrics(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    a, b = start_replicas(start_proxy, upstream.url, tmp_path, s3_server, bucket, 2)
    for proxy in (a, b):  # declared at 0 from the start
        assert sample(proxy.url, "condaproxy_shared_reads_total", 'result="hit"') == 0
        assert sample(proxy.url, "condaproxy_shared_up", 'dependency="storage"') == 1
    assert httpx.get(f"{a.url}/local{PACKAGE}", timeout=30).status_code == 200
    assert wait_for(
        # the package and the shard its checksum came from
        lambda: (sample(a.url, "condaproxy_shared_writes_total", 'result="stored"') or 0) >= 2,
        20,
    )
    assert (sample(a.url, "condaproxy_shared_reads_total", 'result="miss"') or 0) >= 2
    got = httpx.get(f"{b.url}/local{PACKAGE}", timeout=30)
    assert got.status_code == 200
    assert (sample(b.url, "condaproxy_shared_reads_total", 'result="hit"') or 0) >= 1
    assert sample(b.url, "condaproxy_shared_reads_total", 'result="miss"') == 0
    assert upstream.count("GET", PACKAGE) == 1, "B read the bucket's copy"
    s3_server.pause()
    try:
        assert wait_for(
            lambda: sample(b.url, "condaproxy_shared_up", 'dependency="storage"') == 0, 30
        )
    finally:
        s3_server.resume()
    assert wait_for(lambda: sample(b.url, "condaproxy_shared_up", 'dependency="storage"') == 1, 30)
