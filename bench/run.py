"""condaproxy benchmarks, measured against references in the same run. Run by hand:

    apt-get install -y nginx-light wrk curl     # the references and the load generator
    python3 bench/run.py [--rounds 5] [--workers 1 2] [--skip-rss]

Everything listens on 127.0.0.1 and stops by itself. Figures are medians over rounds, as
ratios against nginx measured in the same round:

1. cache hits, 1 MiB and 64 MiB, 16 concurrent clients (wrk): proxy req/s / nginx req/s;
2. a cold 64 MiB download through the proxy vs directly from the upstream (curl): throughput
   ratio and added time to first byte, with nginx as an unthrottled loopback upstream and with
   nginx limited per connection (`limit_rate`) as a stand-in for a network link;
3. 64 concurrent cold requests for one file: upstream requests made (from nginx's access log);
4. peak RSS of the proxy while streaming a 1 GiB file cold and then hot.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

WORK = Path(os.environ.get("BENCH_DIR", "/tmp/condaproxy-bench"))
MiB = 1 << 20
LINK_RATE = os.environ.get("BENCH_LINK_RATE", "100m")  # nginx limit_rate: bytes/s per connection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def list_files(subdir: Path) -> None:
    """The channel's repodata lists every file with its sha256 and size: condaproxy caches only
    files a record vouches for (an unlisted file is streamed through, never kept). Copies of
    one file share its digest, so each distinct content is hashed once."""
    digests: dict[tuple[int, str], str] = {}
    records = {}
    for path in sorted(subdir.glob("*.conda")):
        size = path.stat().st_size
        source = "64m" if size == 64 * MiB and "1g" not in path.name else path.name
        key = (size, source)
        if key not in digests:
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(16 * MiB):
                    sha.update(chunk)
            digests[key] = sha.hexdigest()
        name = path.name.rsplit("-", 2)[0]
        records[path.name] = {
            "name": name,
            "version": "1.0",
            "build": "0",
            "build_number": 0,
            "sha256": digests[key],
            "size": size,
        }
    document = {"info": {"subdir": subdir.name}, "packages": {}, "packages.conda": records}
    (subdir / "repodata.json").write_text(json.dumps(document))
    noarch = subdir.parent / "noarch"
    noarch.mkdir(exist_ok=True)
    empty = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}}
    (noarch / "repodata.json").write_text(json.dumps(empty))


class Nginx:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fast = free_port()
        self.link = free_port()
        self.conf = WORK / "nginx.conf"
        self.access_log = WORK / "nginx-access.log"

    def start(self) -> None:
        self.conf.write_text(f"""
worker_processes 2;
pid {WORK}/nginx.pid;
error_log {WORK}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  access_log {self.access_log};
  server {{ listen 127.0.0.1:{self.fast}; root {self.root}; }}
  server {{ listen 127.0.0.1:{self.link}; root {self.root}; limit_rate {LINK_RATE}; }}
}}
""")
        subprocess.run(["nginx", "-c", str(self.conf)], check=True)
        wait_http(f"http://127.0.0.1:{self.fast}/")

    def stop(self) -> None:
        pid = WORK / "nginx.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGQUIT)
            time.sleep(0.5)

    def upstream_requests(self, path: str) -> int:
        return sum(1 for line in self.access_log.read_text().splitlines() if f"GET {path} " in line)


class Proxy:
    def __init__(self, nginx: Nginx, workers: int, cache: Path) -> None:
        self.port = free_port()
        self.workers = workers
        self.cache = cache
        self.config = WORK / f"proxy-{self.port}.toml"
        self.config.write_text(f"""
[server]
port = {self.port}
workers = {workers}
[cache]
path = "{cache}"
repodata_ttl = 0  # each new file name below is listed by a fresh repodata.json
[channels.fast]
upstream = "http://127.0.0.1:{nginx.fast}"
[channels.link]
upstream = "http://127.0.0.1:{nginx.link}"
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        log = open(WORK / f"proxy-{self.port}.log", "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "condaproxy", "serve", "--config", str(self.config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        wait_http(self.url + "/healthz")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)

    def pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def wrk_rps(url: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "30s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    if "Non-2xx" in out or "Socket errors" in out:
        print("   wrk reported errors:\n" + out)
    return float(match.group(1))


def curl(url: str) -> tuple[float, float]:
    """(bytes/s, seconds to first byte) of one download."""
    out = subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-w", "%{speed_download} %{time_starttransfer}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_hits(nginx: Nginx, proxy: Proxy, rounds: int, seconds: int) -> list[str]:
    rows = []
    for name in ("hit-1m-1.0-0.conda", "hit-64m-1.0-0.conda"):
        path = f"/linux-64/{name}"
        httpx.get(f"{proxy.url}/fast{path}", timeout=60)  # warm the cache
        ref, ours = [], []
        for _ in range(rounds):
            ref.append(wrk_rps(f"http://127.0.0.1:{nginx.fast}{path}", seconds))
            ours.append(wrk_rps(f"{proxy.url}/fast{path}", seconds))
        ratios = [o / r for o, r in zip(ours, ref, strict=True)]
        rows.append(
            f"| cache hit {name.split('-')[1]}, 16 clients, {proxy.workers} worker(s) | "
            f"nginx {median(ref):.0f} req/s | proxy {median(ours):.0f} req/s | "
            f"**{median(ratios):.2f}** |"
        )
        print(rows[-1], flush=True)
    return rows


def bench_cold(nginx: Nginx, proxy: Proxy, rounds: int, channel: str, port: int) -> list[str]:
    ref, ours, ref_ttfb, our_ttfb = [], [], [], []
    for i in range(rounds):
        # A fresh name each round: a cold miss for the proxy, a first read for nginx too.
        name = f"/linux-64/cold-{channel}-{proxy.port}-{i}-1.0-0.conda"
        shutil.copyfile(WORK / "www/linux-64/hit-64m-1.0-0.conda", WORK / f"www{name}")
        list_files(WORK / "www/linux-64")
        direct = f"http://127.0.0.1:{port}{name}"
        rate, ttfb = curl(direct)
        ref.append(rate)
        ref_ttfb.append(ttfb)
        rate, ttfb = curl(f"{proxy.url}/{channel}{name}")
        ours.append(rate)
        our_ttfb.append(ttfb)
    ratios = [o / r for o, r in zip(ours, ref, strict=True)]
    label = "unthrottled loopback" if channel == "fast" else f"upstream limited to {LINK_RATE}B/s"
    row = (
        f"| cold 64 MiB, {label} | direct {median(ref) / MiB:.0f} MiB/s | "
        f"proxy {median(ours) / MiB:.0f} MiB/s | **{median(ratios):.2f}** | "
        f"added TTFB {1000 * (median(our_ttfb) - median(ref_ttfb)):.1f} ms |"
    )
    print(row, flush=True)
    return [row]


async def _many(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:
        responses = await asyncio.gather(*(client.get(url) for _ in range(n)))
    return [len(r.content) for r in responses if r.status_code == 200]


def bench_coalescing(nginx: Nginx, proxy: Proxy) -> list[str]:
    name = f"/linux-64/storm-{proxy.port}-1.0-0.conda"
    shutil.copyfile(WORK / "www/linux-64/hit-64m-1.0-0.conda", WORK / f"www{name}")
    list_files(WORK / "www/linux-64")
    sizes = asyncio.run(_many(f"{proxy.url}/link{name}", 64))
    row = (
        f"| 64 concurrent cold requests, {proxy.workers} worker(s) | {len(sizes)} complete "
        f"64 MiB bodies | upstream requests: **{nginx.upstream_requests(name)}** |"
    )
    print(row, flush=True)
    return [row]


def bench_rss(nginx: Nginx) -> list[str]:
    make_file(WORK / "www/linux-64/big-1g-1.0-0.conda", 1024 * MiB)
    list_files(WORK / "www/linux-64")
    proxy = Proxy(nginx, 1, WORK / "cache-rss").start()
    rows = []
    try:
        for label in ("cold", "hot"):
            peak = 0
            done = threading.Event()

            def sample(done: threading.Event = done) -> None:
                nonlocal peak
                while not done.is_set():
                    total = 0
                    for pid in proxy.pids():
                        try:
                            status = Path(f"/proc/{pid}/status").read_text()
                        except FileNotFoundError:
                            continue
                        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
                    peak = max(peak, total)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            rate, _ = curl(f"{proxy.url}/fast/linux-64/big-1g-1.0-0.conda")
            done.set()
            sampler.join()
            rss = f"peak proxy RSS **{peak / MiB:.0f} MiB**"
            rows.append(f"| 1 GiB {label} | {rss} | {rate / MiB:.0f} MiB/s |")
            print(rows[-1], flush=True)
    finally:
        proxy.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"bench needs {tool}: apt-get install -y nginx-light wrk curl")
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "www/linux-64").mkdir(parents=True)
    make_file(WORK / "www/linux-64/hit-1m-1.0-0.conda", MiB)
    make_file(WORK / "www/linux-64/hit-64m-1.0-0.conda", 64 * MiB)
    list_files(WORK / "www/linux-64")
    nginx = Nginx(WORK / "www")
    nginx.start()
    rows = []
    try:
        for workers in args.workers:
            proxy = Proxy(nginx, workers, WORK / f"cache-w{workers}").start()
            try:
                rows += bench_hits(nginx, proxy, args.rounds, args.seconds)
                rows += bench_cold(nginx, proxy, args.rounds, "fast", nginx.fast)
                rows += bench_cold(nginx, proxy, args.rounds, "link", nginx.link)
                rows += bench_coalescing(nginx, proxy)
            finally:
                proxy.stop()
        if not args.skip_rss:
            rows += bench_rss(nginx)
    finally:
        nginx.stop()
    print("\n".join(["", "## Results", *rows]))


if __name__ == "__main__":
    main()
