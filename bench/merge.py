"""Merging uploads over a conda-forge-sized upstream. Run by hand:

    apt-get install -y nginx-light
    python3 bench/merge.py [--records 500000] [--uploads 100]

A synthetic linux-64 repodata.json of the shape of conda-forge's (500,000 records, ~220 MB) is
served by nginx; 100 packages are uploaded to the proxied channel. Then the upstream changes,
and we time how long until the merged repodata.json.zst is served (the proxy learns of the
change on that request: repodata_ttl = 0). Meanwhile a prober asks /healthz every 10 ms
(the event loop's latency) and a sampler records the peak RSS of every proxy process (the
merge worker included).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import msgspec
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.procs import group_pids, memory
from bench.run import WORK, Nginx, wait_http
from tests.support.channel import Pkg, build_package

MiB = 1 << 20
TOKEN = "bench-upload-token"


def synthetic_repodata(records: int, salt: str) -> bytes:
    conda, tarballs = {}, {}
    for i in range(records):
        name = f"pkg{i % 60000}"
        version = f"{i // 60000}.{i % 7}.{i % 13}"
        build = f"py{310 + i % 3}h{i:08x}_0"
        ext = ".conda" if i % 3 else ".tar.bz2"
        filename = f"{name}-{version}-{build}{ext}"
        record = {
            "build": build,
            "build_number": 0,
            "name": name,
            "version": version,
            "depends": [
                f"python >=3.{i % 12},<4.0a0",
                "libzlib >=1.2.13,<2.0a0",
                f"dep{i % 500} >=1.0",
            ],
            "license": "BSD-3-Clause",
            "license_family": "BSD",
            "subdir": "linux-64",
            "md5": hashlib.md5(filename.encode()).hexdigest(),
            "sha256": hashlib.sha256((filename + salt).encode()).hexdigest(),
            "size": 100000 + i,
            "timestamp": 1700000000000 + i,
            "constrains": ["pyarrow >=10"] if i % 5 == 0 else [],
        }
        (conda if ext == ".conda" else tarballs)[filename] = record
    doc = {
        "info": {"subdir": "linux-64"},
        "packages": tarballs,
        "packages.conda": conda,
        "removed": [],
        "repodata_version": 1,
    }
    return msgspec.json.encode(doc)


def publish_upstream(www: Path, records: int, salt: str) -> int:
    data = synthetic_repodata(records, salt)
    (www / "linux-64").mkdir(parents=True, exist_ok=True)
    for name, body in (
        ("repodata.json", data),
        ("repodata.json.zst", zstandard.ZstdCompressor(level=3, threads=-1).compress(data)),
    ):
        tmp = www / "linux-64" / (name + ".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, www / "linux-64" / name)
    return len(data)


def process_rss(root_pid: int) -> int:
    """VmRSS of the largest process in the proxy's process group."""
    return max((memory([pid])[0] for pid in group_pids(root_pid)), default=0)


class Probe(threading.Thread):
    """Asks /healthz every 10 ms (the event loop's latency) and samples RSS."""

    def __init__(self, url: str, pid: int) -> None:
        super().__init__()
        self.url, self.pid = url, pid
        self.stop = threading.Event()
        self.worst = 0.0
        self.peak = 0

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                t = time.perf_counter()
                client.get(self.url + "/healthz")
                self.worst = max(self.worst, time.perf_counter() - t)
                self.peak = max(self.peak, process_rss(self.pid))
                time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    www = WORK / "merge-www"
    size = publish_upstream(www, args.records, "v0")
    print(f"upstream repodata.json: {args.records} records, {size / MiB:.0f} MiB", flush=True)
    nginx = Nginx(www)
    nginx.start()
    cache = WORK / "merge-cache"
    shutil.rmtree(cache, ignore_errors=True)
    config = WORK / "merge.toml"
    port = nginx.fast + 1000
    config.write_text(f"""
[server]
port = {port}
[cache]
path = "{cache}"
repodata_ttl = 0
[channels.big]
upstream = "http://127.0.0.1:{nginx.fast}"
[tokens.bench]
token = "{TOKEN}"
roles = {{ big = "write" }}
""")
    log = open(WORK / "merge-proxy.log", "wb")  # noqa: SIM115 - the child owns it
    proxy = subprocess.Popen(
        [sys.executable, "-m", "condaproxy", "serve", "--config", str(config)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz")
        httpx.get(f"{url}/big/linux-64/repodata.json.zst", timeout=120)  # the upstream snapshot
        work = WORK / "merge-pkgs"
        for i in range(args.uploads):
            pkg = Pkg(f"internal{i % 40}", f"1.{i}", "h0", "linux-64", ("python >=3.10",))
            path = build_package(pkg, work, work / "out")
            r = httpx.post(
                f"{url}/api/channels/big/upload/{path.name}",
                content=path.read_bytes(),
                headers={"x-api-key": TOKEN},
                timeout=60,
            )
            assert r.status_code == 201, r.text
        print(f"uploaded {args.uploads} packages", flush=True)
        # First merged result after the uploads.
        t0 = time.perf_counter()
        first = httpx.get(f"{url}/big/linux-64/repodata.json.zst", timeout=120)
        took = time.perf_counter() - t0
        print(f"merged after uploads: {took:.2f} s ({len(first.content) / MiB:.0f} MiB zst)")

        timings, stalls, peaks = [], [], []
        for round_ in range(args.rounds):
            publish_upstream(www, args.records, f"v{round_ + 1}")  # the upstream changes
            probe = Probe(url, proxy.pid)
            probe.start()
            t0 = time.perf_counter()
            response = httpx.get(f"{url}/big/linux-64/repodata.json.zst", timeout=120)
            elapsed = time.perf_counter() - t0
            probe.finish()
            reader = zstandard.ZstdDecompressor().stream_reader(response.content)
            merged = msgspec.json.decode(reader.read())
            assert len(merged["packages.conda"]) + len(merged["packages"]) >= args.records
            internal = [k for k in merged["packages.conda"] if k.startswith("internal")]
            assert len(internal) == args.uploads
            timings.append(elapsed)
            stalls.append(probe.worst)
            peaks.append(probe.peak)
            print(
                f"round {round_ + 1}: merged .zst served {elapsed:.2f} s after the upstream "
                f"change; worst /healthz {1000 * probe.worst:.0f} ms; "
                f"peak RSS {probe.peak / MiB:.0f} MiB",
                flush=True,
            )
        shape = f"{args.records} records, {args.uploads} uploads"
        print("\n## Results")
        print(
            f"| merged repodata.json.zst after an upstream change ({shape}) | "
            f"median **{statistics.median(timings):.2f} s** (floor 3 s) |"
        )
        print(
            f"| worst /healthz during the merge | **{1000 * max(stalls):.0f} ms** (floor 50 ms) |"
        )
        print(f"| peak RSS, largest proxy process | **{max(peaks) / MiB:.0f} MiB** (floor 1024) |")
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(30)
        nginx.stop()


if __name__ == "__main__":
    main()
