"""The supply-chain policy's cost on a conda-forge-sized subdir (issue 13). Run by hand:

    python3 bench/policy.py [--records 400000]

A synthetic linux-64 repodata.json (bench/merge.py's shape) is filtered as the proxy does it
(cache/policy_builds.py), each step in a fresh process so its peak RSS is its own:
1. the first sync (every record backfilled, the first-seen map written);
2. the upstream changes (1,000 new records, held by a 7-day cooldown);
3. the shard index and 60,000 shards made from the first view (every shard new), then from the
   changed view (only the names whose records changed get a new shard).
The baseline is the unfiltered work the proxy does anyway for a merged view (bench/merge.py)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.merge import synthetic_repodata
from condaproxy.cache.policy_builds import filter_job, shards_job
from condaproxy.rules.policy import compile_policy

NOW = 1_800_000_000.0
CONFIG = compile_policy("7d", ("evil",), (), {"openssl": "0"}, {}).config


def _filter(args: tuple[str, str, str, float], out: multiprocessing.Queue) -> None:
    source, times, tmp, now = args
    start = time.perf_counter()
    built, _ = filter_job(source, times, CONFIG, "cf", "linux-64", now, (), tmp, source + "1")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(
        {"seconds": round(seconds, 2), "peak_rss_mib": round(peak), "json": built.files["json"][0]}
    )


def _shards(args: tuple[str, str, str, str | None], out: multiprocessing.Queue) -> None:
    json_path, blobs, tmp, previous = args
    start = time.perf_counter()
    built, stored = shards_job(json_path, "linux-64", blobs, tmp, previous)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(
        {
            "seconds": round(seconds, 2),
            "peak_rss_mib": round(peak),
            "new_shards": len(stored),
            "names": built.files["names"][0],
        }
    )


def measured(target, args):  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    proc = context.Process(target=target, args=(args, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=400_000)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="policy-bench-"))
    try:
        tmp = work / "tmp"
        tmp.mkdir()
        first = work / "first.json"
        first.write_bytes(synthetic_repodata(options.records, "a"))
        second = work / "second.json"
        second.write_bytes(synthetic_repodata(options.records + 1000, "a"))
        times = str(work / "policy" / "times.msgpack")
        report = {"records": options.records, "json_mib": round(first.stat().st_size / 2**20)}
        report["first_sync"] = measured(_filter, (str(first), times, str(tmp), NOW))
        first_json = report["first_sync"]["json"]
        report["first_seen_map_mib"] = round(Path(times).stat().st_size / 2**20, 1)
        changed = measured(_filter, (str(second), times, str(tmp), NOW + 600))
        report["upstream_change"] = changed
        blobs = str(work / "blobs")
        report["shards_first"] = measured(_shards, (first_json, blobs, str(tmp), None))
        names = report["shards_first"]["names"]
        report["shards_after_change"] = measured(_shards, (changed["json"], blobs, str(tmp), names))
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
