"""A prober in its own process, so that the benchmark's own work never delays a probe: every
20 ms it asks each URL it was given (condaproxy's /healthz, a small cached package through
each cache) and samples the memory of each process tree, and writes what it saw as JSON lines
stamped with time.monotonic() (the same clock in every process). bench/scale.py marks the
start and end of each operation and reads the samples of its window.

    python3 -m bench.probe SPEC_JSON OUT_JSONL     # runs until SIGTERM
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.procs import ROOT, group_pids, memory

INTERVAL = 0.02


def _probe(target: str, kind: str, url: str, out: list, halt: threading.Event) -> None:
    with httpx.Client(timeout=60) as client:
        while not halt.is_set():
            t0 = time.monotonic()
            try:
                status = client.get(url).status_code
            except httpx.HTTPError:
                status = 0
            out.append((t0, target, kind, time.monotonic() - t0, status))
            halt.wait(max(0.0, INTERVAL - (time.monotonic() - t0)))


def _memory(target: str, pgid: int, out: list, halt: threading.Event) -> None:
    pids, refreshed = [], 0.0
    while not halt.is_set():
        t0 = time.monotonic()
        if t0 - refreshed > 0.25:
            pids, refreshed = group_pids(pgid), t0
        rss, anon, largest = memory(pids)
        out.append((t0, target, "mem", rss, anon, largest))
        halt.wait(max(0.0, INTERVAL - (time.monotonic() - t0)))


def main() -> None:
    spec, path = json.loads(sys.argv[1]), sys.argv[2]
    halt = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: halt.set())
    samples: list = []
    threads = [threading.Thread(target=_probe, args=(*p, samples, halt)) for p in spec["probes"]]
    threads += [threading.Thread(target=_memory, args=(*m, samples, halt)) for m in spec["trees"]]
    for thread in threads:
        thread.start()
    while len(samples) < len(threads) and not halt.is_set():
        time.sleep(0.005)
    Path(path + ".ready").touch()  # every prober has answered once: measuring may start
    for thread in threads:
        thread.join()
    with open(path, "w") as f:
        for sample in samples:
            f.write(json.dumps(sample) + "\n")


@dataclass
class Window:
    latencies: dict[tuple[str, str], list[float]]  # (target, kind) -> seconds
    errors: dict[tuple[str, str], int]
    peak: dict[str, tuple[int, int, int]]  # target -> (rss, anon, largest anon)

    def summary(self, target: str, kind: str) -> dict[str, float] | None:
        values = sorted(self.latencies.get((target, kind), []))
        if not values:
            return None
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return {
            "n": len(values),
            "p50_ms": 1000 * statistics.median(values),
            "p99_ms": 1000 * p99,
            "max_ms": 1000 * values[-1],
            "errors": self.errors.get((target, kind), 0),
        }


class Prober:
    """Start/stop the prober process; read the windows of operations afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.out = workdir / f"probe-{time.monotonic_ns()}.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.samples: list = []

    def start(self, probes: list[tuple[str, str, str]], trees: list[tuple[str, int]]) -> None:
        spec = json.dumps({"probes": probes, "trees": trees})
        cmd = [sys.executable, "-m", "bench.probe", spec, str(self.out)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
        ready = Path(str(self.out) + ".ready")
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("the prober exited before it was ready")
            time.sleep(0.01)
        ready.unlink()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        self.proc.wait(60)
        self.proc = None
        with open(self.out) as f:
            self.samples += [json.loads(line) for line in f]
        self.out.unlink()

    def window(self, t0: float, t1: float) -> Window:
        latencies: dict = {}
        errors: dict = {}
        peak: dict = {}
        for sample in self.samples:
            # A memory sample is an instant; a probe spans [start, start + latency].
            end = sample[0] + (0 if sample[2] == "mem" else sample[3])
            if sample[0] > t1 or end < t0:
                continue
            if sample[2] == "mem":
                old = peak.get(sample[1], (0, 0, 0))
                peak[sample[1]] = tuple(max(a, b) for a, b in zip(old, sample[3:], strict=True))
            else:
                latencies.setdefault((sample[1], sample[2]), []).append(sample[3])
                if sample[4] != 200:
                    errors[(sample[1], sample[2])] = errors.get((sample[1], sample[2]), 0) + 1
        return Window(latencies, errors, peak)


if __name__ == "__main__":
    main()
