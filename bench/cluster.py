"""Replicas sharing a bucket (issue 9), measured by hand:

    python3 bench/cluster.py [--rounds 5] [--size-mib 32]

Starts moto's S3 server, Debian's redis-server (installed with apt when missing), the test
upstream and 3 replicas per configuration, all on 127.0.0.1, and prints medians:

1. upstream GETs for one cold file, 3 replicas x 20 concurrent clients, with and without Redis;
2. how long an upload takes to show on another replica, with Redis and without (poll 2 s);
3. L2 hit (empty L1, the bucket's copy verified on the way) throughput vs a direct boto3 GET
   of the same object: moto bounds the absolute figures, the ratio is the meaningful one;
4. L1 hit throughput with storage configured vs a proxy without it (same file, same client).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.replicas import WRITE, start_replicas  # noqa: E402
from tests.support.channel import Pkg, build_channel, build_package  # noqa: E402
from tests.support.processes import Proxy, Upstream, write_config  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.s3 import S3Server  # noqa: E402

MiB = 1 << 20


class Started:
    """Proxies started by `start`, stopped all at once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.proxies: list[Proxy] = []

    def start(self, channels: dict[str, dict[str, object]], **kw: Any) -> Proxy:
        config = write_config(
            self.work / f"p{len(self.proxies)}.toml",
            kw.pop("cache"),
            channels,
            extra=kw.pop("extra", ""),
            tokens=kw.pop("tokens", None),
        )
        proxy = Proxy(config, env=kw.pop("env", {})).start()
        self.proxies.append(proxy)
        return proxy

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        self.proxies = []


async def gets(urls: list[str], each: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as c:
        return await asyncio.gather(*(c.get(u) for u in urls for _ in range(each)))


def throughput(url: str, n: int = 5) -> float:
    """MiB/s of `n` sequential GETs of `url` (the first excluded: it warms)."""
    with httpx.Client(timeout=120) as client:
        client.get(url)
        start, size = time.perf_counter(), 0
        for _ in range(n):
            size += len(client.get(url).content)
        return size / MiB / (time.perf_counter() - start)


def wait(predicate: Callable[[], bool], seconds: float = 30) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > seconds:
            raise TimeoutError("condition not met")
        time.sleep(0.01)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="condaproxy-cluster-bench-"))
    packages = [Pkg(f"cold{i}", "1.0", "h0", "linux-64") for i in range(args.rounds * 2)]
    big = Pkg("big", "1.0", "h0", "linux-64", payload_size=args.size_mib * MiB)
    channel = build_channel(work / "channel", work / "build", (*packages, big))
    uploads = [
        build_package(Pkg(f"up{i}", "1.0", "h0", "linux-64"), work / "build", work / "out")
        for i in range(args.rounds * 2)
    ]
    s3, redis, upstream = S3Server().start(), RedisServer().start(), Upstream(channel).start()
    started = Started(work)
    figures: dict[str, list[float]] = {}
    try:
        for redis_url, label in ((redis.url, "redis"), ("", "no redis")):
            for r in range(args.rounds):
                bucket = s3.new_bucket()
                proxies = start_replicas(
                    started.start,
                    upstream.url,
                    work / f"{label}-{r}",
                    s3,
                    bucket,
                    3,
                    2.0,
                    redis_url,
                )
                for proxy in proxies:
                    httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=60)
                pkg = packages[r if redis_url else args.rounds + r]
                path = f"/linux-64/{pkg.filename}"
                upstream.mode("slow")
                asyncio.run(gets([f"{p.url}/local{path}" for p in proxies], 20))
                upstream.mode("ok")
                figures.setdefault(f"upstream GETs, 3x20 cold, {label}", []).append(
                    upstream.count("GET", path)
                )
                up = uploads[r if redis_url else args.rounds + r]
                a, b = proxies[0], proxies[1]
                httpx.post(
                    f"{a.url}/api/channels/internal/upload/{up.name}",
                    content=up.read_bytes(),
                    headers={"x-api-key": WRITE},
                    timeout=60,
                ).raise_for_status()
                seen = wait(lambda b=b, up=up: up.name in listed(b.url))
                figures.setdefault(f"upload visible elsewhere (s), {label}", []).append(seen)
                if redis_url:
                    l2_vs_direct(figures, a, b, s3, bucket, channel, big)
                started.stop()
        plain = started.start({"local": {"upstream": upstream.url}}, cache=work / "plain")
        (shared,) = start_replicas(started.start, upstream.url, work / "l1", s3, s3.new_bucket(), 1)
        url = f"/local/linux-64/{big.filename}"
        for _ in range(args.rounds):
            ratio = throughput(shared.url + url) / throughput(plain.url + url)
            figures.setdefault("L1 hit with storage / without", []).append(ratio)
    finally:
        started.stop()
        upstream.stop()
        redis.kill()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("| figure | median | rounds |\n|---|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.3g} | {len(values)} |")


def listed(url: str) -> set[str]:
    got = httpx.get(f"{url}/internal/linux-64/repodata.json", timeout=30)
    return set(got.json().get("packages.conda", {})) if got.status_code == 200 else set()


def l2_vs_direct(
    figures: dict[str, list[float]],
    a: Proxy,
    b: Proxy,
    s3: S3Server,
    bucket: str,
    channel: Path,
    big: Pkg,
) -> None:
    """B's first GET of a file A fetched comes from the bucket; compare with boto3 directly."""
    data = (channel / "linux-64" / big.filename).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = f"prod/cas/sha256/{sha[:2]}/{sha}"
    httpx.get(f"{a.url}/local/linux-64/{big.filename}", timeout=120)
    wait(lambda: key in s3.keys(bucket, "prod/cas/"), 120)
    start = time.perf_counter()
    got = httpx.get(f"{b.url}/local/linux-64/{big.filename}", timeout=120)
    l2 = len(got.content) / (time.perf_counter() - start)
    client = s3.client()
    start = time.perf_counter()
    direct = len(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    direct_rate = direct / (time.perf_counter() - start)
    figures.setdefault("L2 hit / direct store GET", []).append(l2 / direct_rate)


if __name__ == "__main__":
    main()
