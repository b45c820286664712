"""Replicas sharing a bucket (issue 9), measured by hand:

    python3 bench/cluster.py [--rounds 3] [--size-mib 32] [--rate 50] [--huge-mib 1024]
                             [--skip once,visible,l2,l1,peer,rss]

Starts moto's S3 server, Debian's redis-server (installed with apt when missing), the test
upstream and the replicas of each figure, all on 127.0.0.1, and prints medians:

- once: upstream GETs for one cold file, 3 replicas x 20 concurrent clients, with and without
  Redis;
- visible: how long an upload takes to show on another replica, with Redis and without (poll
  2 s);
- l2: L2 hit (B's L1 empty, the bucket's copy verified on the way) throughput vs a GET of the
  same object straight from the store: by curl (a presigned URL; the proxy's GET is timed by
  curl too) and by boto3 (the client the proxy itself uses). moto shares the two cores with
  the replica and the client. Also each side's time to first byte (moto's own is in both),
  the replica's CPU per MiB of the hit (10 ms clock ticks), and sha256's single-thread rate:
  an L2 hit hashes every byte before its last one goes out, so on 2 cores it cannot match a
  plain GET whose body phase is faster than sha256;
- l1: L1 hit throughput with storage configured vs a proxy without it (same file; wrk, 4
  connections, 2 s each, alternating);
- peer: a peer-streamed waiter's throughput vs the owner's: replica A fetches a cold file from
  an upstream limited to `--rate` MiB/s per connection, B's client asks once A's upstream GET
  is under way and streams it from A (Redis lease, `peer_url`);
- rss: peak RSS of a replica's process tree while a client streams a `--huge-mib` cold file
  through it and until the bucket holds the file.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.clients import Fetched, MemorySampler, _curl, _finish, wrk  # noqa: E402
from bench.procs import group_pids  # noqa: E402
from bench.realchannel import build_big  # noqa: E402
from tests.cluster.replicas import WRITE, start_peers, start_replicas  # noqa: E402
from tests.support.channel import Pkg, build_package, index_channel  # noqa: E402
from tests.support.processes import Proxy, Upstream, write_config  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.s3 import S3Server  # noqa: E402

MiB = 1 << 20
ROWS = ("once", "visible", "l2", "l1", "peer", "rss")
L2_FILES = 3  # L2 hits per round (each needs a file B has never seen)


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


class Channel:
    """The upstream's files: small cold packages and uploads, and big random ones."""

    def __init__(self, work: Path, args: argparse.Namespace, skip: set[str]) -> None:
        self.root, build = work / "channel", work / "build"
        n = args.rounds * 2
        self.cold = [Pkg(f"cold{i}", "1.0", "h0", "linux-64") for i in range(n)]
        for pkg in self.cold:
            build_package(pkg, build, self.root)
        self.uploads = [
            build_package(Pkg(f"up{i}", "1.0", "h0", "linux-64"), build, work / "out")
            for i in range(n)
        ]
        count = {"l2": args.rounds * L2_FILES, "peer": args.rounds}
        self.big: dict[str, list[Pkg]] = {}
        rows = (("l2", args.size_mib), ("peer", args.size_mib), ("l1", args.size_mib))
        for row, size in (*rows, ("rss", args.huge_mib)):
            if row in skip:
                continue
            pkgs = [
                Pkg(f"{row}big{i}", "1.0", "h0", "linux-64", payload_size=size * MiB)
                for i in range(count.get(row, 1))
            ]
            for pkg in pkgs:
                build_big(pkg, build / pkg.name, self.root)
                shutil.rmtree(build / pkg.name)
            self.big[row] = pkgs
        index_channel(self.root)

    def path(self, pkg: Pkg) -> str:
        return f"/local/linux-64/{pkg.filename}"

    def sha256(self, pkg: Pkg) -> str:
        return hashlib.sha256((self.root / "linux-64" / pkg.filename).read_bytes()).hexdigest()


async def gets(urls: list[str], each: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as c:
        return await asyncio.gather(*(c.get(u) for u in urls for _ in range(each)))


def wait(predicate: Callable[[], bool], seconds: float = 30) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > seconds:
            raise TimeoutError("condition not met")
        time.sleep(0.01)
    return time.monotonic() - start


def fetch(url: str, sha256: str, slot: int = 0) -> Fetched:
    """One GET timed by curl (into scratch file `slot`); the body must be the published one."""
    got = _finish(_curl(url, slot, None), slot)
    if got.status != 200 or got.sha256 != sha256:
        raise AssertionError(f"{url}: status {got.status}, sha256 {got.sha256}")
    return got


def rate(url: str, sha256: str, slot: int = 0) -> float:
    """MiB/s of one GET timed by curl (into scratch file `slot`)."""
    return fetch(url, sha256, slot).rate / MiB


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (clock ticks: 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sha256_rate() -> float:
    """MiB/s of hashlib's sha256 on this machine, one thread: the ceiling of any verified
    read (an L2 hit must hash every byte before its last one goes out)."""
    data, digest = os.urandom(8 * MiB), hashlib.sha256()
    start = time.perf_counter()
    for _ in range(8):
        digest.update(data)
    return 64 / (time.perf_counter() - start)


def metadata(*proxies: Proxy) -> None:
    """Fetch the channel's repodata through each proxy, as a client does before a package."""
    for proxy in proxies:
        httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=60).raise_for_status()


def blob_key(sha256: str) -> str:
    return f"prod/cas/sha256/{sha256[:2]}/{sha256}"


@contextlib.contextmanager
def servers(
    channel: Channel, work: Path
) -> Iterator[tuple[S3Server, RedisServer, Upstream, Started]]:
    """moto, redis-server and the test upstream for one run, and the replicas it starts: all
    stopped, and `work` removed, at the end."""
    s3, redis, upstream = S3Server().start(), RedisServer().start(), Upstream(channel.root).start()
    started = Started(work)
    try:
        yield s3, redis, upstream, started
    finally:
        started.stop()
        upstream.stop()
        redis.kill()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--rate", type=float, default=50, help="upstream MiB/s for `peer`")
    parser.add_argument("--huge-mib", type=int, default=1024)
    parser.add_argument("--skip", default="", help=f"rows to leave out: {','.join(ROWS)}")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="condaproxy-cluster-bench-"))
    print("building the channel ...", flush=True)
    channel = Channel(work, args, skip)
    figures: dict[str, list[float]] = {}
    with servers(channel, work) as (s3, redis, upstream, started):
        for redis_url, label in ((redis.url, "redis"), ("", "no redis")):
            if {"once", "visible"} <= skip:
                break
            for r in range(args.rounds):
                once_and_visible(figures, started, upstream, s3, redis_url, label, channel, r, skip)
        for r in range(args.rounds):
            if "l2" not in skip:
                l2_row(figures, started, upstream, s3, redis.url, channel, r)
            if "peer" not in skip:
                peer_row(figures, started, upstream, s3, redis.url, channel, r, args.rate, work)
        if "l1" not in skip:
            l1_row(figures, started, upstream, s3, channel, work, args.rounds)
        if "rss" not in skip:
            rss_row(figures, started, upstream, s3, channel, work)
    print("| figure | median | rounds | values |\n|---|---|---|---|")
    for name, values in figures.items():
        shown = ", ".join(f"{v:.3g}" for v in values)
        print(f"| {name} | {statistics.median(values):.3g} | {len(values)} | {shown} |")


def once_and_visible(
    figures: dict[str, list[float]],
    started: Started,
    upstream: Upstream,
    s3: S3Server,
    redis_url: str,
    label: str,
    channel: Channel,
    r: int,
    skip: set[str],
) -> None:
    root = started.work / f"{label}-{r}"
    proxies = start_replicas(
        started.start, upstream.url, root, s3, s3.new_bucket(), 3, 2.0, redis_url
    )
    try:
        metadata(*proxies)
        i = r if redis_url else len(channel.cold) // 2 + r
        if "once" not in skip:
            path = f"/linux-64/{channel.cold[i].filename}"
            upstream.mode("slow")
            asyncio.run(gets([f"{p.url}/local{path}" for p in proxies], 20))
            upstream.mode("ok")
            figures.setdefault(f"upstream GETs, 3x20 cold, {label}", []).append(
                upstream.count("GET", path)
            )
        if "visible" not in skip:
            up = channel.uploads[i]
            a, b = proxies[0], proxies[1]
            httpx.post(
                f"{a.url}/api/channels/internal/upload/{up.name}",
                content=up.read_bytes(),
                headers={"x-api-key": WRITE},
                timeout=60,
            ).raise_for_status()
            seen = wait(lambda: up.name in listed(b.url))
            figures.setdefault(f"upload visible elsewhere (s), {label}", []).append(seen)
    finally:
        started.stop()


def listed(url: str) -> set[str]:
    got = httpx.get(f"{url}/internal/linux-64/repodata.json", timeout=30)
    return set(got.json().get("packages.conda", {})) if got.status_code == 200 else set()


def l2_row(
    figures: dict[str, list[float]],
    started: Started,
    upstream: Upstream,
    s3: S3Server,
    redis_url: str,
    channel: Channel,
    r: int,
) -> None:
    """A fetches each file (into the bucket); B's first GET of it comes from the bucket.
    Compared with GETting the same object from the store (curl, in alternating order, and
    boto3)."""
    bucket = s3.new_bucket()
    root = started.work / f"l2-{r}"
    a, b = start_replicas(
        started.start,
        upstream.url,
        root,
        s3,
        bucket,
        2,
        2.0,
        redis_url,
    )
    client = s3.client()
    metadata(a, b)
    try:
        for j, pkg in enumerate(channel.big["l2"][r * L2_FILES : (r + 1) * L2_FILES]):
            sha = channel.sha256(pkg)
            rate(a.url + channel.path(pkg), sha)
            wait(lambda sha=sha: blob_key(sha) in s3.keys(bucket, "prod/cas/"), 120)
            direct_url = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": blob_key(sha)}, ExpiresIn=600
            )
            rate(direct_url, sha)  # moto's first read of an object is not what is measured
            assert b.proc is not None
            cpu = cpu_seconds(b.proc.pid)
            if j % 2:
                l2_got = fetch(b.url + channel.path(pkg), sha)
                cpu = cpu_seconds(b.proc.pid) - cpu
                direct_got = fetch(direct_url, sha)
            else:
                direct_got = fetch(direct_url, sha)
                cpu = cpu_seconds(b.proc.pid)
                l2_got = fetch(b.url + channel.path(pkg), sha)
                cpu = cpu_seconds(b.proc.pid) - cpu
            l2, direct = l2_got.rate / MiB, direct_got.rate / MiB
            start = time.perf_counter()
            size = len(client.get_object(Bucket=bucket, Key=blob_key(sha))["Body"].read())
            boto3_rate = size / MiB / (time.perf_counter() - start)
            figures.setdefault("L2 hit / direct store GET (curl)", []).append(l2 / direct)
            figures.setdefault("L2 hit / direct store GET (boto3)", []).append(l2 / boto3_rate)
            figures.setdefault("  L2 hit MiB/s", []).append(l2)
            figures.setdefault("  direct store GET MiB/s, curl", []).append(direct)
            figures.setdefault("  direct store GET MiB/s, boto3", []).append(boto3_rate)
            # Where an L2 hit's time goes: the store's own time to first byte is in both.
            figures.setdefault("  L2 hit time to first byte (ms)", []).append(l2_got.ttfb * 1000)
            figures.setdefault("  direct time to first byte (ms)", []).append(
                direct_got.ttfb * 1000
            )
            figures.setdefault("  L2 hit replica CPU ms per MiB", []).append(
                cpu * 1000 / (l2_got.size / MiB)
            )
            ceiling = "  sha256 MiB/s, one thread (a verified read's ceiling)"
            figures.setdefault(ceiling, []).append(sha256_rate())
    finally:
        started.stop()


def peer_row(
    figures: dict[str, list[float]],
    started: Started,
    upstream: Upstream,
    s3: S3Server,
    redis_url: str,
    channel: Channel,
    r: int,
    mib_s: float,
    work: Path,
) -> None:
    """A's client starts a cold download; B's client asks once A's upstream GET is under way,
    and streams it from A as it arrives."""
    proxies: list[Proxy] = []
    (work / f"peer-{r}").mkdir()
    a, b = start_peers(proxies, upstream.url, work / f"peer-{r}", s3, s3.new_bucket(), redis_url)
    metadata(a, b)
    pkg = channel.big["peer"][r]
    sha, path = channel.sha256(pkg), channel.path(pkg)
    upstream_path = path.removeprefix("/local")
    upstream.mode(f"rate:{mib_s:g}")
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            owner = pool.submit(rate, a.url + path, sha)
            wait(lambda: upstream.count("GET", upstream_path) >= 1)
            waiter = pool.submit(rate, b.url + path, sha, 1)
            owner_rate, waiter_rate = owner.result(), waiter.result()
        fetched = upstream.count("GET", upstream_path)
        if fetched != 1:
            raise AssertionError(f"the upstream served {pkg.filename} {fetched} times, not once")
        figures.setdefault(f"peer-streamed waiter / owner ({mib_s:g} MiB/s upstream)", []).append(
            waiter_rate / owner_rate
        )
        figures.setdefault("  owner MiB/s", []).append(owner_rate)
        figures.setdefault("  waiter MiB/s", []).append(waiter_rate)
    finally:
        upstream.mode("ok")
        for proxy in proxies:
            proxy.stop()


def l1_row(
    figures: dict[str, list[float]],
    started: Started,
    upstream: Upstream,
    s3: S3Server,
    channel: Channel,
    work: Path,
    rounds: int,
) -> None:
    plain = started.start({"local": {"upstream": upstream.url}}, cache=work / "plain")
    (shared,) = start_replicas(started.start, upstream.url, work / "l1", s3, s3.new_bucket(), 1)
    pkg = channel.big["l1"][0]
    sha = channel.sha256(pkg)
    metadata(plain, shared)
    try:
        for proxy in (plain, shared):
            rate(proxy.url + channel.path(pkg), sha)  # the miss: not measured
        for i in range(rounds * 3):
            pair = (plain, shared) if i % 2 else (shared, plain)
            got = {p.url: wrk(p.url + channel.path(pkg), 2, 4) for p in pair}
            figures.setdefault("L1 hit with storage / without", []).append(
                got[shared.url] / got[plain.url]
            )
    finally:
        started.stop()


def rss_row(
    figures: dict[str, list[float]],
    started: Started,
    upstream: Upstream,
    s3: S3Server,
    channel: Channel,
    work: Path,
) -> None:
    """Peak RSS of one replica's whole process tree from the request of a huge cold file until
    the bucket holds it (the copy to the bucket included)."""
    bucket = s3.new_bucket()
    (proxy,) = start_replicas(started.start, upstream.url, work / "rss", s3, bucket, 1)
    pkg = channel.big["rss"][0]
    sha = channel.sha256(pkg)
    assert proxy.proc is not None
    pgid = proxy.proc.pid
    metadata(proxy)
    try:
        with MemorySampler(lambda: group_pids(pgid)) as sampler:
            mib_s = rate(proxy.url + channel.path(pkg), sha)
            stored = wait(lambda: blob_key(sha) in s3.keys(bucket, "prod/cas/"), 600)
        figures.setdefault(f"peak RSS, {pkg.payload_size // MiB} MiB cold file (MiB)", []).append(
            sampler.peak_rss / MiB
        )
        figures.setdefault("  its throughput MiB/s", []).append(mib_s)
        figures.setdefault("  in the bucket, s after the last byte", []).append(stored)
    finally:
        started.stop()


if __name__ == "__main__":
    main()
