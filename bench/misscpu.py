"""CPU and wall time of condaproxy per cold miss, without a client's own CPU in the way (issue 10).

A fresh proxy over the peers channel (bench/realchannel.py) first gets every shard of the
channel (tiny files: the per-request cost of a miss), then every package under 8 MiB (the
verified download path), each phase by `--concurrency` aiohttp clients. The proxy's CPU
(user + system, every process of its tree, from /proc) and the wall time of each phase are
printed per round; `--workers 0` measures nginx proxy_cache instead. Run by hand:

    python3 bench/misscpu.py --workers 1 --rounds 3
    python3 bench/misscpu.py --workers 2 --rounds 3
    python3 bench/misscpu.py --workers 0            # nginx proxy_cache, the yardstick

CPU per miss is steadier than wall time on a shared machine: compare two checkouts by running
this script from each, alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import aiohttp
import msgpack
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import realchannel
from bench.nginx import Nginx, NginxCache, static_server
from bench.procs import CondaProxy, free_port, group_pids

DATA = Path(os.environ.get("BENCH_DATA", "/var/tmp/condaproxy-bench-data"))
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/condaproxy-misscpu"))
BIGGEST = 8 << 20  # the channel's big files (64 MiB, 1 GiB) are other rows' business


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def urls(channel: Path) -> tuple[list[str], list[str]]:
    shards, packages = [], []
    for subdir in ("linux-64", "noarch"):
        raw = (channel / subdir / "repodata_shards.msgpack.zst").read_bytes()
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw, 1 << 26))
        shards.append(f"{subdir}/repodata_shards.msgpack.zst")
        shards += [f"{subdir}/shards/{d.hex()}.msgpack.zst" for d in index["shards"].values()]
        repodata = json.loads((channel / subdir / "repodata.json").read_text())
        records = {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}
        packages += [f"{subdir}/{fn}" for fn, r in records.items() if r["size"] < BIGGEST]
    return shards, packages


async def fetch_all(base: str, paths: list[str], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(path: str) -> None:
            async with gate, session.get(f"{base}/{path}") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path}: HTTP {response.status}")

        await asyncio.gather(*(one(p) for p in paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="0: nginx proxy_cache")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    channel = realchannel.channel(DATA, 60)
    shards, packages = urls(channel)
    port = free_port()
    upstream = Nginx("upstream", WORK, [static_server(port, channel)])
    upstream.start(port)
    try:
        for _ in range(args.rounds):
            if args.workers == 0:
                cache = NginxCache(WORK, [port]).start()
                base, pids, stop = cache.urls[port], cache.pids(), cache.stop
            else:
                proxy = CondaProxy(WORK, {"c": f"http://127.0.0.1:{port}"}, args.workers).start()
                base, stop = proxy.channel_url("c"), proxy.stop
                pids = group_pids(proxy.proc.pid)  # type: ignore[union-attr]
            time.sleep(0.5)  # every worker up
            line = []
            try:
                for name, paths in (("shard", shards), ("package", packages)):
                    cpu, wall = cpu_seconds(pids), time.perf_counter()
                    asyncio.run(fetch_all(base, paths, args.concurrency))
                    wall, cpu = time.perf_counter() - wall, cpu_seconds(pids) - cpu
                    line.append(
                        f"{len(paths)} {name} misses {wall * 1000:.0f} ms wall, "
                        f"{cpu * 1000 / len(paths):.2f} ms CPU each"
                    )
            finally:
                stop()
            label = f"{args.workers}w" if args.workers else "nginx proxy_cache"
            print(f"{label}: " + "; ".join(line), flush=True)
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
