"""condaproxy beside nginx proxy_cache over a conda-forge-sized upstream: the yardstick of
issue 14 ("conda-forge scale"). Run by hand:

    apt-get install -y nginx-light curl lbzip2
    python3 bench/scale.py [--records 400000] [--rounds 3] [--workers 1] [--skip ROW,...]

A synthetic channel (bench/synth.py, bench/scalechannel.py; generated once per --records and
kept in BENCH_DATA) is served by nginx with ETags. An nginx proxy_cache (bench/nginx.py) and
condaproxy (shipped defaults: repodata_ttl 60 s) sit in front of it, both on empty caches at
the start of each round. A prober process asks condaproxy's /healthz and a small cached
package through each cache every 20 ms, and samples the RSS (total and anonymous) of each
process tree, during every operation. "Upstream changed" means: 50 names get a new version,
their shards, the shard index and every repodata file are rewritten (new ETags), and the
benchmark waits until both caches' copies are older than 60 s.

Rows (`--skip` takes their group keys): cold (cold GETs and the burst), change (.zst, disk,
.bz2 after a change), solve (py-rattler solves, warm and after a change), shards, current,
merge. A markdown table of medians, condaproxy / nginx ratios, and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clients import Fetched, curl
from bench.nginx import Nginx, NginxCache, static_server
from bench.probe import Prober
from bench.procs import CondaProxy, du, free_port, group_pids, load_average, written
from bench.rclient import rattler
from bench.report import Row, environment, save, table
from bench.scalechannel import Channel
from tests.support.channel import Pkg, build_package

DATA = Path(os.environ.get("BENCH_DATA", "/var/tmp/condaproxy-bench-data"))
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/condaproxy-scale"))
TTL = 60  # condaproxy's shipped repodata_ttl, and the nginx cache's metadata validity
TOKEN = "bench-upload-token-0123456789abcdef"
GROUPS = ("cold", "change", "solve", "shards", "current", "merge")
NGINX, PROXY = "nginx proxy_cache", "condaproxy"
ZST, BZ2 = "linux-64/repodata.json.zst", "linux-64/repodata.json.bz2"
CURRENT = "linux-64/current_repodata.json"


class Side:
    """A cache under test: `url` is its URL for the channel, `pgid` its process tree."""

    def __init__(self, name: str, start: Callable[[], None], stop: Callable[[], None]) -> None:
        self.name, self._start, self._stop = name, start, stop
        self.url, self.pgid, self.cache = "", 0, Path()

    def start(self) -> None:
        self._start()

    def stop(self) -> None:
        self._stop()


def sides(upstream: str, port: int, workers: int) -> list[Side]:
    tokens = f'[tokens.bench]\ntoken = "{TOKEN}"\nroles = {{ team = "write" }}\n'
    proxy = CondaProxy(WORK, {"cf": upstream, "team": upstream}, workers, extra=tokens)
    ours = Side(PROXY, lambda: None, proxy.stop)

    def start_proxy() -> None:
        proxy.start()
        ours.url, ours.pgid, ours.cache = proxy.channel_url("cf"), proxy.proc.pid, proxy.cache  # type: ignore[union-attr]

    ours._start = start_proxy
    cache = NginxCache(WORK, [port])
    theirs = Side(NGINX, lambda: None, cache.stop)

    def start_cache() -> None:
        cache.start()
        theirs.url, theirs.pgid = cache.urls[port], cache.nginx.proc.pid  # type: ignore[union-attr]
        theirs.cache = cache.cache_root

    theirs._start = start_cache
    return [theirs, ours]


class Run:
    def __init__(self, args: argparse.Namespace, channel: Channel, sides: list[Side]) -> None:
        self.args, self.channel, self.sides = args, channel, sides
        self.prober = Prober(WORK)
        self.ops: list[tuple[str, str, float, float]] = []
        self.touched = 0.0  # when a cache last saw a request (its metadata is fresh until +TTL)
        self.rows = make_rows()
        self.real = channel.real()

    def op(self, name: str, side: Side, fn: Callable[[], object]) -> object:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.ops.append((name, side.name, t0, time.monotonic()))
            self.touched = time.monotonic()

    def add(self, key: str, side: Side, value: float) -> None:
        self.rows[key].add(side.name, value)

    def wait_expired(self) -> None:
        left = self.touched + TTL + 2 - time.monotonic()
        if left > 0:
            print(f"    waiting {left:.0f} s for the caches' copies to expire", flush=True)
            time.sleep(left)

    def get(
        self, side: Side, path: str, sha: str | None = None, ok: tuple[int, ...] = (200,)
    ) -> Fetched:
        got = curl(f"{side.url}/{path}", verify=sha is not None)
        if got.status not in ok or (sha and got.sha256 != sha):
            raise RuntimeError(f"{side.name} {path}: {got}")
        return got

    # the round

    def round(self, i: int) -> None:
        order = self.sides if i % 2 == 0 else self.sides[::-1]
        for side in order:
            side.start()
        probe_fn, probe_rec = self.real[-1]
        for side in order:
            self.get(side, f"linux-64/{probe_fn}", probe_rec["sha256"])
        probes = [(s.name, "package", f"{s.url}/linux-64/{probe_fn}") for s in order]
        probes.append((PROXY, "healthz", self.proxy.url.rsplit("/", 1)[0] + "/healthz"))
        self.prober.start(probes, [(s.name, s.pgid) for s in order])
        try:
            self.steps(order, i)
        finally:
            self.prober.stop()
            for side in order:
                side.stop()
        self.windows()

    @property
    def proxy(self) -> Side:
        return next(s for s in self.sides if s.name == PROXY)

    def steps(self, order: list[Side], i: int) -> None:
        skip = self.args.skip
        if "cold" not in skip:
            self.cold(order)
        for side in order:
            got = self.op("zst_fill", side, lambda s=side: self.get(s, ZST))
            self.add("zst_fill", side, got.total)  # type: ignore[attr-defined]
        if "solve" not in skip:
            self.solves(order, "solve", warm=True)
        if "shards" not in skip:
            self.shards(order)
        if "current" not in skip:
            for side in order:
                got = self.op("current", side, lambda s=side: self.get(s, CURRENT))
                self.add("current", side, got.size)  # type: ignore[attr-defined]
        if "merge" not in skip:
            self.merge(i)
        if "change" not in skip:
            self.change(order)
        if "solve" not in skip:
            self.update_upstream()
            self.wait_expired()
            self.solves(order, "solve_change", warm=False)
        print(f"  round {i + 1} done (load average {load_average()})", flush=True)

    def cold(self, order: list[Side]) -> None:
        first, burst = self.real[0], self.real[1:101]
        for side in order:
            path, sha = f"linux-64/{first[0]}", first[1]["sha256"]
            got = self.op("cold_get", side, lambda s=side, p=path, h=sha: self.get(s, p, h))
            self.add("cold_get", side, got.total)  # type: ignore[attr-defined]
        for side in order:
            t0 = time.perf_counter()
            self.op("burst", side, lambda s=side: fetch_many(s.url, burst, 16))
            self.add("burst", side, time.perf_counter() - t0)

    def solves(self, order: list[Side], key: str, warm: bool) -> None:
        specs, client = self.channel.solve_specs(), WORK / "client"
        for shards, suffix in ((True, "sharded"), (False, "json")):
            for side in order:
                if warm:  # everything the solve needs is in the cache, and fresh
                    rattler(side.url, client, specs, shards, solve_only=True)
                result = self.op(
                    f"{key}_{suffix}",
                    side,
                    lambda s=side, sh=shards: rattler(s.url, client, specs, sh, solve_only=True),
                )
                self.add(f"{key}_{suffix}", side, result["solve_s"])  # type: ignore[index]
                self.rows[f"{key}_{suffix}"].notes["packages"] = result["records"]  # type: ignore[index]

    def shards(self, order: list[Side]) -> None:
        names = self.channel.shard_names()
        specs = set(self.channel.solve_specs())
        # Names far from anything fetched so far: a cold shard for both caches.
        picked = [f for n, f in sorted(names.items())[-400::8] if n not in specs][:50]
        items = [(f"shards/{f}", {"sha256": f[:64]}) for f in picked]
        for side in order:
            t0 = time.perf_counter()
            self.op("shards", side, lambda s=side: fetch_many(s.url, items, 10))
            self.add("shards", side, time.perf_counter() - t0)

    def update_upstream(self) -> None:
        t0 = time.monotonic()
        self.channel.update()
        print(f"    upstream changed ({time.monotonic() - t0:.0f} s to rewrite it)", flush=True)

    def change(self, order: list[Side]) -> None:
        self.update_upstream()
        self.wait_expired()
        for side in order:
            before, du_before = written(side_pids(side)), du(side.cache)
            got = self.op("change_zst", side, lambda s=side: self.get(s, ZST))
            time.sleep(2)  # writes that finish after the response
            self.add("change_ttfb", side, got.ttfb)  # type: ignore[attr-defined]
            self.add("change_total", side, got.total)  # type: ignore[attr-defined]
            self.add("change_disk", side, written(side_pids(side)) - before)
            deltas = self.rows["change_disk"].notes.setdefault("du_delta", {})
            deltas.setdefault(side.name, []).append(du(side.cache) - du_before)
        for side in order:
            bz2: list[Fetched] = []
            thread = threading.Thread(
                target=lambda s=side, out=bz2: out.append(self.get(s, BZ2, ok=(200, 404)))
            )
            t0 = time.monotonic()
            thread.start()
            time.sleep(0.3)
            during = self.get(side, ZST)
            thread.join()
            self.ops.append(("bz2", side.name, t0, time.monotonic()))
            self.touched = time.monotonic()
            self.add("bz2_first", side, bz2[0].total)
            statuses = self.rows["bz2_first"].notes.setdefault("status", {})
            statuses.setdefault(side.name, []).append(bz2[0].status)  # 404: made in background
            self.add("zst_during_bz2", side, during.total)

    def merge(self, i: int) -> None:
        side = self.proxy
        team = side.url.rsplit("/", 1)[0] + "/team"
        curl(f"{team}/{ZST}", verify=False)  # the upstream snapshot, before the upload
        work = WORK / "uploads"
        path = build_package(Pkg("benchupload", f"1.{i}", "h0_0", "linux-64"), work, work / "out")
        url = f"{side.url.rsplit('/', 1)[0]}/api/channels/team/upload/{path.name}"
        r = httpx.post(url, content=path.read_bytes(), headers={"x-api-key": TOKEN}, timeout=120)
        if r.status_code != 201:
            raise RuntimeError(f"upload refused: {r.status_code} {r.text}")
        got = self.op("merge", side, lambda: curl(f"{team}/{ZST}", verify=False))
        self.add("merge_time", side, got.total)  # type: ignore[attr-defined]

    def windows(self) -> None:
        """Per-operation probe latencies and memory peaks, from the prober's samples."""
        notes = self.rows["healthz_p99"].notes.setdefault("per_operation", {})
        for name, target, t0, t1 in self.ops[self.seen :]:
            window = self.prober.window(t0, t1)
            entry = notes.setdefault(name, {}).setdefault(target, [])
            summary = {k: window.summary(t, k) for t, k in window.latencies if t == target}
            rss, anon, largest = window.peak.get(target, (0, 0, 0))
            entry.append({**summary, "peak_rss": rss, "peak_anon": anon, "largest_anon": largest})
            if name == "burst" and target == PROXY and (h := window.summary(PROXY, "healthz")):
                self.rows["healthz_p99"].add(PROXY, h["p99_ms"])
                self.rows["healthz_max"].add(PROXY, h["max_ms"])
            if name == "merge":
                self.rows["merge_anon"].add(PROXY, largest)
        ops = self.ops[self.seen :]
        whole = self.prober.window(min(o[2] for o in ops), max(o[3] for o in ops))
        for target, (rss, anon, _) in whole.peak.items():
            self.rows["rss_peak"].add(target, rss)
            self.rows["anon_peak"].add(target, anon)
        self.seen = len(self.ops)

    seen = 0


def side_pids(side: Side) -> list[int]:
    return group_pids(side.pgid)


def fetch_many(base: str, items: list[tuple[str, dict]], at_once: int) -> None:
    """GET every `linux-64/<name>` under `base`, `at_once` at a time, checking each sha256."""
    local = threading.local()

    def one(item: tuple[str, dict]) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=300)
        name, record = item
        r = local.client.get(f"{base}/linux-64/{name}")
        if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != record["sha256"]:
            raise RuntimeError(f"{base}/linux-64/{name}: {r.status_code}")

    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(one, items))


def make_rows() -> dict[str, Row]:
    specs = [
        ("cold_get", "cold package GET (small file, empty cache)", "s"),
        ("burst", "100 cold package GETs, 16 at a time", "s"),
        ("healthz_p99", "/healthz during those bursts, p99 (goal < 50 ms)", "ms"),
        ("healthz_max", "/healthz during those bursts, max", "ms"),
        ("zst_fill", "first repodata.json.zst, empty cache", "s"),
        ("change_ttfb", "upstream changed: next .zst, first byte", "s"),
        ("change_total", "upstream changed: next .zst, total", "s"),
        ("change_disk", "disk written per upstream change (write_bytes of the tree)", "bytes"),
        ("bz2_first", "first repodata.json.bz2 after a change", "s"),
        ("zst_during_bz2", ".zst of the same subdir asked during that .bz2 build", "s"),
        ("solve_sharded", "py-rattler solve of 5 names, sharded (caches warm)", "s"),
        ("solve_json", "py-rattler solve of 5 names, repodata.json (caches warm)", "s"),
        ("solve_change_sharded", "the same, sharded, first client after an upstream change", "s"),
        ("solve_change_json", "the same, repodata.json, first client after a change", "s"),
        ("shards", "50 cold shards, 10 at a time", "s"),
        ("current", "current_repodata.json served", "bytes"),
        ("merge_time", "merge of one upload: merged .zst served", "s"),
        ("merge_anon", "merge of one upload: largest process's peak anonymous RSS", "bytes"),
        ("rss_peak", "peak RSS of the tree over a round (every process summed)", "bytes"),
        ("anon_peak", "peak anonymous RSS of the tree over a round", "bytes"),
    ]
    return {key: Row(key, label, unit) for key, label, unit in specs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip", default="", help=f"row groups to skip: {','.join(GROUPS)}")
    parser.add_argument(
        "--unsharded",
        action="store_true",
        help="the upstream publishes no shard index (404): misses find records in the JSON",
    )
    args = parser.parse_args()
    args.skip = {s for s in args.skip.split(",") if s}
    if unknown := args.skip - set(GROUPS):
        parser.error(f"unknown groups {sorted(unknown)}; groups are {', '.join(GROUPS)}")
    for tool in ("nginx", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"scale needs {tool}: apt-get install -y nginx-light curl")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    channel = Channel(DATA, args.records, WORK)
    channel.ensure()
    channel.reset()
    if args.unsharded:
        if not {"change", "solve", "shards", "merge"} <= args.skip:
            parser.error("--unsharded needs --skip change,solve,shards,merge (they use shards)")
        for index in channel.www.glob("*/repodata_shards.msgpack.zst"):
            index.unlink()  # a hard link of the generated one: only this copy goes
    env = environment()
    print(f"load average before: {env['load_average']}", flush=True)
    port = free_port()
    upstream = Nginx("upstream", WORK, [static_server(port, channel.www)], access_log=True)
    upstream.start(port)
    run = Run(args, channel, sides(f"http://127.0.0.1:{port}", port, args.workers))
    try:
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds} (load average {load_average()})", flush=True)
            env.setdefault("load_average_per_round", []).append(load_average())
            run.round(i)
    finally:
        for side in run.sides:
            side.stop()
        upstream.stop()
    env["load_average_after"] = load_average()
    rows = [r for r in run.rows.values() if r.values]
    out = table(rows, [NGINX, PROXY], NGINX, None)
    # The per-operation probes and memory live in the healthz row's notes: kept even when the
    # bursts that give that row its values are skipped.
    kept = [r for r in run.rows.values() if r.values or r.notes]
    name = f"scale-r{args.records}" + ("-unsharded" if args.unsharded else "")
    path = save(name, {**vars(args), "skip": sorted(args.skip)}, env, kept)
    print(
        f"\n## scale, {args.records} records, {env['date']}, load average "
        f"{env['load_average']} -> {env['load_average_after']}\n\n{out}\n"
    )
    for row in rows:
        if row.notes and row.key != "healthz_p99":
            print(f"- {row.key}: {row.notes}")
    print(f"\nresults (with per-operation probes and memory): {path}")


if __name__ == "__main__":
    main()
