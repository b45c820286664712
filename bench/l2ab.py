"""L2 hits of two (or more) builds of the replica, paired in one run (issue 9):

    python3 bench/l2ab.py --code /work/main --code /work/wt/mine [--files 10] [--size-mib 32]

On a shared 2-core machine the L2/direct figure of bench/cluster.py swings by a factor of two
from one run to the next (other processes, and a VM's first touch of page-cache memory:
about 3.5 ms per MiB, which the L1 write pays and curl's preallocated scratch file does not).
Comparing two runs then says nothing. Here each `--code` tree runs a replica of its own
(started in that tree), all with an empty L1 on one bucket that holds `--files` random
packages put there directly; each file is then fetched straight from the store by curl and
through every replica, in rotating order, so each pair is measured under the same load.
Printed per file: each replica's L2/direct ratio and its CPU per MiB (10 ms clock ticks);
then the medians, and every GET's time to first byte / total.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench.cluster as cluster  # noqa: E402
from bench.clients import Fetched  # noqa: E402
from bench.cluster import (  # noqa: E402
    Channel,
    MiB,
    blob_key,
    cpu_seconds,
    fetch,
    metadata,
    servers,
)
from tests.cluster.replicas import TOKENS  # noqa: E402
from tests.support import processes  # noqa: E402
from tests.support.s3 import STORAGE_ENV, storage_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", action="append", required=True, help="a source tree")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size-mib", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="condaproxy-l2ab-"))
    shape = argparse.Namespace(rounds=1, size_mib=args.size_mib, huge_mib=1)
    cluster.L2_FILES = args.files  # Channel builds rounds x L2_FILES packages for the row
    print("building the channel ...", flush=True)
    channel = Channel(work, shape, {"once", "visible", "peer", "rss", "l1"})
    timings: dict[str, list[Fetched]] = {}
    with servers(channel, work) as (s3, redis, upstream, started):
        bucket, client = s3.new_bucket(), s3.client()
        files = []
        for pkg in channel.big["l2"]:
            sha = channel.sha256(pkg)
            body = (channel.root / "linux-64" / pkg.filename).read_bytes()
            client.put_object(Bucket=bucket, Key=blob_key(sha), Body=body)
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": blob_key(sha)}, ExpiresIn=3600
            )
            fetch(url, sha)  # moto's first read of an object is not what is measured
            files.append((channel.path(pkg), sha, url))
        extra = storage_section(s3, bucket) + f'[cluster]\nredis_url = "{redis.url}"\n'
        replicas = []
        for i, code in enumerate(args.code):
            # `python -m condaproxy` imports from its working directory first: run each
            # replica in its own tree (Proxy.start runs in processes.ROOT).
            processes.ROOT = Path(code).resolve()
            try:
                replica = started.start(
                    {"local": {"upstream": upstream.url}, "internal": {}},
                    cache=work / f"l1-{i}",
                    extra=extra,
                    env={**STORAGE_ENV, "PYTHONPATH": str(processes.ROOT)},
                    tokens=TOKENS,
                )
            finally:
                processes.ROOT = ROOT
            replicas.append(replica)
            assert replica.proc is not None
            print(f"{i}: {Path(f'/proc/{replica.proc.pid}/cwd').resolve()}", flush=True)
        metadata(*replicas)
        ratios: list[list[float]] = [[] for _ in replicas]
        cpus: list[list[float]] = [[] for _ in replicas]
        for j, (path, sha, url) in enumerate(files):
            order: list[int | None] = [None, *range(len(replicas))]
            order = order[j % len(order) :] + order[: j % len(order)]
            got: dict[int | None, Fetched] = {}
            for who in order:
                if who is None:
                    got[None] = fetch(url, sha)
                    timings.setdefault("direct", []).append(got[None])
                    continue
                pid = replicas[who].proc.pid  # type: ignore[union-attr]
                before = cpu_seconds(pid)
                got[who] = fetch(replicas[who].url + path, sha)
                cpus[who].append((cpu_seconds(pid) - before) * 1000 / (got[who].size / MiB))
                timings.setdefault(args.code[who], []).append(got[who])
            line = f"direct {got[None].rate / MiB:6.0f} MiB/s"
            for i in range(len(replicas)):
                ratios[i].append(got[i].rate / got[None].rate)
                mib_s = got[i].rate / MiB
                line += f" | {i}: {mib_s:6.0f} r={ratios[i][-1]:.2f} cpu={cpus[i][-1]:.2f}"
            print(line, flush=True)
        for name, fetched in timings.items():
            shown = " ".join(f"{f.ttfb * 1000:.0f}/{f.total * 1000:.0f}" for f in fetched)
            print(f"{name}: time to first byte / total, ms: {shown}")
        for i, code in enumerate(args.code):
            print(
                f"{i} {code}: median L2/direct {statistics.median(ratios[i]):.3f}, "
                f"CPU {statistics.median(cpus[i]):.2f} ms per MiB"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
