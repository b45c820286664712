"""condaproxy beside nginx proxy_cache on one real upstream: the yardstick of issue 10 ("cold
path at least as fast as nginx proxy_cache"). Run by hand:

    apt-get install -y nginx-light wrk curl
    python3 bench/peers.py [--rounds 3] [--workers 1,2] [--packages 60] [--skip ROW,...] [--quick]

One nginx serves a real channel (bench/realchannel.py: 60 names, both formats, linux-64 and
noarch, repodata.json + .zst + CEP-16 shards) twice: unthrottled on loopback, and limited to
BENCH_LINK_RATE (default 100m = 100 MiB/s) per connection like a link to a CDN. Each target
reaches it its own way, each round on an empty cache:

- direct: the clients talk to the upstream nginx (the reference, 1.00);
- condaproxy with 1 and with 2 workers (this worktree's code, shipped defaults);
- nginx proxy_cache (bench/nginx.py: lock, revalidate, use_stale, 1 year for packages and
  shards, 60 s for metadata).

Rows (`--skip` takes their keys): cold_link, cold_fast, warm, cold_json, file64, hit1m, rss1g,
storm. Every figure is a median over rounds; every ratio is taken within a round, then the
median of those. Results: a markdown table, and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import realchannel
from bench.clients import MemorySampler, curl, storm, wrk
from bench.nginx import Nginx, NginxCache, static_server
from bench.procs import CondaProxy, MiB, free_port, load_average, memory
from bench.rclient import rattler
from bench.report import Row, environment, save, table

DATA = Path(os.environ.get("BENCH_DATA", "/var/tmp/condaproxy-bench-data"))
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/condaproxy-peers"))
LINK_RATE = os.environ.get("BENCH_LINK_RATE", "100m")
ROWS = ("cold_link", "cold_fast", "warm", "cold_json", "file64", "hit1m", "rss1g", "storm")
DIRECT, NGINX = "direct", "nginx proxy_cache"
BIGS = realchannel.BIG_FILES


class Upstream:
    def __init__(self, channel: Path) -> None:
        self.fast, self.link = free_port(), free_port()
        servers = [static_server(self.fast, channel), static_server(self.link, channel, LINK_RATE)]
        self.nginx = Nginx("upstream", WORK, servers, access_log=True)

    def url(self, which: str) -> str:
        return f"http://127.0.0.1:{self.fast if which == 'fast' else self.link}"


class Target:
    """How a client reaches the channel: `base(which)` is the channel URL for the fast or the
    link upstream; start() gives an empty cache."""

    def __init__(self, name: str, upstream: Upstream) -> None:
        self.name, self.upstream = name, upstream

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def base(self, which: str) -> str:
        return self.upstream.url(which)

    def pids(self) -> list[int]:
        return self.upstream.nginx.pids()


class Proxy(Target):
    def __init__(self, upstream: Upstream, workers: int) -> None:
        super().__init__(f"condaproxy {workers}w", upstream)
        channels = {"fast": upstream.url("fast"), "link": upstream.url("link")}
        self.proxy = CondaProxy(WORK, channels, workers)

    def start(self) -> None:
        self.proxy.start()

    def stop(self) -> None:
        self.proxy.stop()

    def base(self, which: str) -> str:
        return self.proxy.channel_url(which)

    def pids(self) -> list[int]:
        return self.proxy.pids()


class Cache(Target):
    def __init__(self, upstream: Upstream) -> None:
        super().__init__(NGINX, upstream)
        self.cache = NginxCache(WORK, [upstream.fast, upstream.link])

    def start(self) -> None:
        self.cache.start()

    def stop(self) -> None:
        self.cache.stop()

    def base(self, which: str) -> str:
        return self.cache.urls[self.upstream.fast if which == "fast" else self.upstream.link]

    def pids(self) -> list[int]:
        return self.cache.pids()


def install_rows(targets: list[Target], rows: dict[str, Row], specs: list[str], i: int) -> None:
    client = WORK / "client"
    for target in rotated(targets, i):
        for which, key in (("link", "cold_link"), ("fast", "cold_fast"), ("fast", "cold_json")):
            if key not in rows and not (key == "cold_fast" and "warm" in rows):
                continue
            target.start()
            try:
                shards = key != "cold_json"
                cold = rattler(target.base(which), client, specs, shards=shards)
                if key in rows:
                    rows[key].add(target.name, cold["total_s"])
                    rows[key].notes.setdefault("packages", cold["records"])
                    rows[key].notes.setdefault("MiB", round(cold["bytes"] / MiB, 1))
                if key == "cold_fast" and "warm" in rows:
                    warm = rattler(target.base(which), client, specs)
                    rows["warm"].add(target.name, warm["total_s"])
            finally:
                target.stop()
        print(f"  installs through {target.name} done", flush=True)


def file_rows(
    targets: list[Target], rows: dict[str, Row], shas: dict[str, str], i: int, seconds: int
) -> None:
    cold, hit = realchannel.big_file("cold64m"), realchannel.big_file("hit1m")
    for target in rotated(targets, i):
        target.start()
        try:
            if "file64" in rows:
                got = curl(realchannel.package_url(target.base("fast"), cold))
                assert got.status == 200 and got.sha256 == shas[cold], (target.name, got)
                rows["file64"].add(target.name, got.rate / MiB)
            if "storm" in rows:
                storm_row(target, rows["storm"], shas[cold])
            if "hit1m" in rows:
                url = realchannel.package_url(target.base("fast"), hit)
                got = curl(url)
                assert got.status == 200 and got.sha256 == shas[hit], (target.name, got)
                rows["hit1m"].add(target.name, wrk(url, seconds))
        finally:
            target.stop()
        print(f"  single files through {target.name} done", flush=True)


def storm_row(target: Target, row: Row, sha: str) -> None:
    name = realchannel.big_file("cold64m")
    url = realchannel.package_url(target.base("link"), name)
    path = f"/linux-64/{name}"
    before = target.upstream.nginx.requests(path)
    if target.name == DIRECT:
        got = curl(url)  # the upstream transfer alone: the reference
        assert got.sha256 == sha
        row.add(DIRECT, got.total)
        return
    result = storm(url, 64, sha)
    if result.bodies_ok != 64:  # a result, not a crash: the table says so
        failed = [s for s in result.statuses if s != 200]
        print(f"  !! {target.name}: {64 - result.bodies_ok} of 64 bodies wrong: {failed}")
    row.notes.setdefault("bodies_ok", {}).setdefault(target.name, []).append(result.bodies_ok)
    row.add(target.name, result.first)
    row.notes.setdefault("last_s", {}).setdefault(target.name, []).append(round(result.last, 3))
    upstream = target.upstream.nginx.requests(path) - before
    row.notes.setdefault("upstream_requests", {}).setdefault(target.name, []).append(upstream)


def rss_row(targets: list[Target], row: Row, i: int, size: int) -> None:
    name = realchannel.big_file("huge1g")
    for target in rotated(targets, i):
        target.start()
        try:
            idle = row.notes.setdefault("idle_MiB", {}).setdefault(target.name, [])
            idle.append(round(memory(target.pids())[0] / MiB))  # before the transfer
            with MemorySampler(target.pids) as sampler:
                got = curl(realchannel.package_url(target.base("fast"), name), verify=False)
            assert got.status == 200 and got.size == size, (target.name, got)
            row.add(target.name, sampler.peak_rss / MiB)
            rates = row.notes.setdefault("MiB/s", {}).setdefault(target.name, [])
            rates.append(round(got.rate / MiB))
        finally:
            target.stop()


def rotated(targets: list[Target], i: int) -> list[Target]:
    """A different order each round, so no target always goes first (or last)."""
    k = i % len(targets)
    return targets[k:] + targets[:k]


def make_rows(skip: set[str]) -> dict[str, Row]:
    rate = LINK_RATE.replace("m", " MiB").replace("k", " KiB")  # nginx's size suffixes
    link = f"upstream limited to {rate}/s per connection"
    rows = {
        "cold_link": Row("cold_link", f"cold install (rattler solve+install), {link}", "s"),
        "cold_fast": Row("cold_fast", "cold install, unthrottled upstream", "s"),
        "warm": Row("warm", "warm install (cache full, client cache empty)", "s"),
        "cold_json": Row("cold_json", "cold install, unthrottled, repodata.json (no shards)", "s"),
        "file64": Row("file64", "cold 64 MiB file, unthrottled (curl, sha256 checked)", "MiB/s"),
        "hit1m": Row("hit1m", "cached 1 MiB package, wrk 16 connections", "req/s"),
        "rss1g": Row("rss1g", "peak RSS of the tree streaming a 1 GiB cold file", "MiB"),
        "storm": Row("storm", f"64 clients on one cold 64 MiB file, first done; {link}", "s"),
    }
    for key in ("file64", "hit1m"):
        rows[key].better = "higher"
    return {k: v for k, v in rows.items() if k not in skip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="condaproxy worker counts, e.g. 1,2")
    parser.add_argument("--packages", type=int, default=60, help="names in the channel")
    parser.add_argument("--skip", default="", help=f"rows to skip: {','.join(ROWS)}")
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration")
    parser.add_argument("--no-nginx-cache", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 round, 2 s wrk, no 1 GiB row")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    if unknown := skip - set(ROWS):
        parser.error(f"unknown rows {sorted(unknown)}; rows are {', '.join(ROWS)}")
    if args.quick:
        args.rounds, args.seconds = 1, 2
        skip |= {"rss1g", "cold_json"}
    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"peers needs {tool}: apt-get install -y nginx-light wrk curl")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    channel = realchannel.channel(DATA, args.packages)
    files = {n: realchannel.published(channel, n) for n in map(realchannel.big_file, BIGS)}
    shas = {name: sha for name, (sha, _) in files.items()}
    specs = realchannel.specs(args.packages)
    env = environment()
    print(f"load average before: {env['load_average']}", flush=True)
    upstream = Upstream(channel)
    upstream.nginx.start(upstream.fast)
    targets: list[Target] = [Target(DIRECT, upstream)]
    targets += [Proxy(upstream, int(w)) for w in args.workers.split(",")]
    if not args.no_nginx_cache:
        targets.append(Cache(upstream))
    rows = make_rows(skip)
    try:
        rattler(upstream.url("fast"), WORK / "client", specs)  # page cache and imports warm
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds} (load average {load_average()})", flush=True)
            env.setdefault("load_average_per_round", []).append(load_average())
            install_rows(targets, rows, specs, i)
            file_rows(targets, rows, shas, i, args.seconds)
            if "rss1g" in rows:
                rss_row(targets, rows["rss1g"], i, files[realchannel.big_file("huge1g")][1])
    finally:
        for target in targets:
            target.stop()
        upstream.nginx.stop()
    env["load_average_after"] = load_average()
    names = [t.name for t in targets]
    out = table(list(rows.values()), names, DIRECT, NGINX if not args.no_nginx_cache else None)
    path = save("peers", vars(args), env, list(rows.values()))
    print(
        f"\n## peers, {env['date']}, load average {env['load_average']} -> "
        f"{env['load_average_after']}\n\n{out}\n"
    )
    for row in rows.values():
        if row.notes:
            print(f"- {row.key}: {row.notes}")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
