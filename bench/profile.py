"""Where condaproxy spends its time on a cold path: py-spy samples the proxy's whole process
tree while one scenario runs, then the top functions are printed (self time, and time with
callees). Run by hand:

    pip install py-spy
    python3 bench/profile.py miss      # a cold 1 GiB package, unthrottled upstream
    python3 bench/profile.py install   # a cold rattler install of the peers channel (60 names)

The flame graph input (py-spy's raw, collapsed stacks) is kept under BENCH_WORK for
`flamegraph.pl` or speedscope.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import realchannel
from bench.clients import curl
from bench.nginx import Nginx, static_server
from bench.procs import CondaProxy, free_port
from bench.rclient import rattler

DATA = Path(os.environ.get("BENCH_DATA", "/var/tmp/condaproxy-bench-data"))
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/condaproxy-profile"))
LINE = re.compile(r":\d+\)$")
# A pool thread waiting for work: its leaf is _worker (or, with --native, the queue's get).
WAITING = re.compile(r"^_worker \(concurrent|_queue_SimpleQueue_get")
# The top Python frame while uvloop's C loop runs: waiting in epoll, or socket I/O in C.
LOOP = "Runner.run (asyncio/runners.py)"


def summarise(raw: Path, top: int) -> str:
    """Top functions by self samples and by inclusive samples, from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = waiting = loop = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [LINE.sub(")", f) for f in stack.split(";")[1:]]  # [0] is the process
        if not frames:
            continue
        n = int(count)
        if any(WAITING.search(f) for f in frames[-3:]):
            waiting += n
            continue
        if frames[-1] == LOOP:
            loop += n
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "no busy samples"
    out = [
        f"{samples} samples in Python code or below it; besides, {loop} in uvloop's C loop "
        f"(epoll or socket I/O) and {waiting} of pool threads waiting for work",
        "shares of the first kind:",
        "",
    ]
    out += ["self:"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "with callees:"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=("miss", "install"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="C frames too (py-spy --native)")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("profile needs py-spy: pip install py-spy")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    channel = realchannel.channel(DATA, 60)
    port = free_port()
    upstream = Nginx("upstream", WORK, [static_server(port, channel)])
    upstream.start(port)
    proxy = CondaProxy(WORK, {"fast": f"http://127.0.0.1:{port}"}, args.workers).start()
    raw = WORK / f"{args.scenario}.raw"
    pid = str(proxy.proc.pid)  # type: ignore[union-attr]
    spy = subprocess.Popen(
        [
            *("py-spy", "record", "--subprocesses", "--rate", "250", "--format", "raw"),
            *("--output", str(raw), "--pid", pid),
            *(["--native"] if args.native else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # py-spy attaches
    try:
        t0 = time.perf_counter()
        if args.scenario == "miss":
            url = realchannel.package_url(proxy.channel_url("fast"), realchannel.big_file("huge1g"))
            got = curl(url, verify=False)
            what = f"cold 1 GiB: {got.rate / (1 << 20):.0f} MiB/s"
        else:
            result = rattler(proxy.channel_url("fast"), WORK / "client", realchannel.specs(60))
            what = f"cold install of {result['records']} packages: {result['total_s']:.2f} s"
        elapsed = time.perf_counter() - t0
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        proxy.stop()
        upstream.stop()
    print(f"{what} ({elapsed:.2f} s under the profiler)\n")
    print(summarise(raw, args.top))
    print(f"\nraw stacks: {raw}")


if __name__ == "__main__":
    main()
