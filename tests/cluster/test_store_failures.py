"""What clients see when the shared store fails: hits keep working, misses come from upstream
and stay in L1, uploads get a 503 JSON error, /readyz names the store; and a store that ignores
conditional writes is refused at start-up, naming storage.url."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import WRITE, start_replicas, wait_for
from tests.support.processes import ROOT, free_port, write_config
from tests.support.redis_server import RedisServer
from tests.support.s3 import STORAGE_ENV, IgnoringPreconditions, S3Server, storage_section

pytestmark = pytest.mark.integration

WARM = "/linux-64/datatool-1.0-h2.conda"
COLD = "/linux-64/libzlib-1.3-h0.conda"
SERVE = [sys.executable, "-m", "condaproxy", "serve"]


def readyz(url: str) -> dict:
    got = httpx.get(f"{url}/readyz", timeout=30)
    assert got.status_code == 200, got.text  # still serving: never out of the Service
    return got.json()


def test_store_down_hits_work_misses_go_upstream_uploads_get_503_and_readyz_says_so(
    upstream,
    start_proxy,
    tmp_path: Path,
    s3_server: S3Server,
    bucket: str,
    channel_dir: Path,
) -> None:
    (proxy,) = start_replicas(start_proxy, upstream.url, tmp_path, s3_server, bucket, 1)
    assert readyz(proxy.url)["storage"] == "ok"
    assert httpx.get(f"{proxy.url}/local{WARM}", timeout=30).status_code == 200
    httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=30)
    s3_server.pause()
    try:
        assert wait_for(lambda: readyz(proxy.url)["storage"] == "unavailable", 20)
        body = readyz(proxy.url)
        assert "s3://" in body["storage_error"] and "secret" not in str(body)
        hit = httpx.get(f"{proxy.url}/local{WARM}", timeout=30)
        assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
        miss = httpx.get(f"{proxy.url}/local{COLD}", timeout=30)
        assert miss.status_code == 200
        assert miss.content == (channel_dir / COLD.lstrip("/")).read_bytes()
        again = httpx.get(f"{proxy.url}/local{COLD}", timeout=30)
        assert again.headers["x-cache"] == "HIT", "a miss while the store is down stays in L1"
        refused = httpx.post(
            f"{proxy.url}/api/channels/internal/upload/libzlib-1.3-h0.conda",
            content=(channel_dir / COLD.lstrip("/")).read_bytes(),
            headers={"x-api-key": WRITE},
            timeout=30,
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["status"] == 503
        assert "shared storage unavailable" in refused.json()["error"]
    finally:
        s3_server.resume()
    assert wait_for(lambda: readyz(proxy.url)["storage"] == "ok", 20)
    # What could not be replicated meanwhile reaches the bucket once the store is back.
    assert wait_for(
        lambda: (
            any(k.startswith("prod/cas/") for k in s3_server.keys(bucket))
            and len([k for k in s3_server.keys(bucket) if k.startswith("prod/cas/")]) >= 2
        ),
        20,
    ), s3_server.keys(bucket)
    assert upstream.count("GET", COLD) == 1


def test_a_store_that_ignores_conditional_writes_is_refused_at_start_naming_storage_url(
    upstream, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    with IgnoringPreconditions(s3_server.url) as lax:
        fake = S3Server(port=lax.port)
        config = write_config(
            tmp_path / "proxy.toml",
            tmp_path / "cache",
            {"local": {"upstream": upstream.url}},
            extra=storage_section(fake, bucket),
        )
        proc = subprocess.run(
            [*SERVE, "--config", str(config), "--port", str(free_port())],
            cwd=ROOT,
            env={**os.environ, **STORAGE_ENV},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "'storage.url'" in lines[0] and "conditional writes" in lines[0]
    assert "Traceback" not in proc.stderr


def test_store_down_with_redis_a_waiting_replica_does_not_wait_for_a_bucket_copy(
    upstream, replicas, s3_server: S3Server, redis_server: RedisServer, channel_dir: Path
) -> None:
    a, b = replicas(2, 0.5, redis_server.url)
    for proxy in (a, b):
        assert httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=30).is_success
    s3_server.pause()
    try:
        assert wait_for(  # marked down by a failed call, not only silent (a hung poll)
            lambda: all(
                readyz(p.url)["storage"] == "unavailable"
                and "no answer" not in readyz(p.url)["storage_error"]
                for p in (a, b)
            ),
            20,
        )
        upstream.mode("slow")
        start = time.monotonic()
        got = asyncio.run(both([f"{a.url}/local{COLD}", f"{b.url}/local{COLD}"]))
        took = time.monotonic() - start
    finally:
        s3_server.resume()
    expected = (channel_dir / COLD.lstrip("/")).read_bytes()
    assert all(r.status_code == 200 and r.content == expected for r in got)
    assert took < 5, f"{took:.1f}s: a replica waited for a copy the bucket could not hold"


async def both(urls: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(client.get(u) for u in urls))
