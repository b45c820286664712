"""Load generators and measuring clients: curl (timings from curl itself, bodies hashed after
the clock stops, so hashing never slows the transfer being timed), many curls joining one
download, wrk, and a sampler of a process tree's memory."""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import memory

SCRATCH = Path("/dev/shm")  # bodies land in memory: a client's disk is not what is measured
CURL_TIMES = "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"


@dataclass
class Fetched:
    status: int
    ttfb: float
    total: float
    size: int
    sha256: str | None = None

    @property
    def rate(self) -> float:
        return self.size / self.total if self.total else 0.0


def _parse(out: str) -> Fetched:
    code, ttfb, total, size = out.split()[-4:]
    return Fetched(int(code), float(ttfb), float(total), int(float(size)))


def sha256_file(path: Path, size: int) -> str:
    """sha256 of the first `size` bytes of `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while size > 0 and (chunk := f.read(min(size, 1 << 20))):
            digest.update(chunk)
            size -= len(chunk)
    return digest.hexdigest()


def scratch(slot: int, size: int = 80 << 20) -> Path:
    """A file in memory with `size` bytes already allocated. curl writes a body over it
    without truncating it (the file is opened read-write), so no page is allocated while a
    transfer is timed: a body lands at about 1.3 GB/s where a fresh file takes 0.9 GB/s and
    a pipe to a hashing process 0.3 GB/s. Removed at exit."""
    path = SCRATCH / f"condaproxy-bench-{os.getpid()}-{slot}"
    if not path.exists() or path.stat().st_size < size:
        with open(path, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
        atexit.register(path.unlink, missing_ok=True)
    return path


def _curl(url: str, slot: int | None, headers: dict[str, str] | None) -> subprocess.Popen[str]:
    cmd = ["curl", "-s", "-w", "%{stderr}" + CURL_TIMES, url]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    if slot is None:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with open(scratch(slot), "r+b") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], slot: int | None) -> Fetched:
    got = _parse(proc.communicate(timeout=900)[1])
    if slot is not None:
        got.sha256 = sha256_file(scratch(slot), got.size)
    return got


def curl(url: str, verify: bool = True, headers: dict[str, str] | None = None) -> Fetched:
    """One GET, timed by curl; with `verify`, the sha256 of the body, computed afterwards."""
    slot = 0 if verify else None
    return _finish(_curl(url, slot, headers), slot)


@dataclass
class Storm:
    first: float  # seconds from the first launch to the first complete, correct body
    last: float
    bodies_ok: int
    statuses: list[int]


def storm(url: str, clients: int, sha256: str) -> Storm:
    """`clients` curls asking for one URL at once; each body checked against `sha256`."""
    for slot in range(clients):
        scratch(slot)
    t0 = time.perf_counter()
    procs = []
    for slot in range(clients):
        procs.append((time.perf_counter() - t0, _curl(url, slot, None)))
    # Every transfer ends before any body is hashed: hashing must not slow a transfer.
    gots = [(launched, _parse(proc.communicate(timeout=900)[1])) for launched, proc in procs]
    good = [
        launched + got.total
        for i, (launched, got) in enumerate(gots)
        if got.status == 200 and sha256_file(scratch(i), got.size) == sha256
    ]
    statuses = [got.status for _, got in gots]
    return Storm(min(good, default=0.0), max(good, default=0.0), len(good), statuses)


def wrk(url: str, seconds: int, connections: int = 16) -> float:
    """Requests per second; any error, non-2xx answer or timeout fails the run."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk against {url} reported errors:\n{out}")
    return float(match.group(1))


class MemorySampler(threading.Thread):
    """Peak RSS (total over the tree), anonymous RSS (total) and the largest single process's
    anonymous RSS, sampled every `interval` seconds until stopped."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.halt = threading.Event()
        self.peak_rss = self.peak_anon = self.peak_largest_anon = 0

    def run(self) -> None:
        known: list[int] = []
        refreshed = 0.0
        while not self.halt.is_set():
            now = time.monotonic()
            if now - refreshed > 0.25:  # new processes (workers spawned on demand)
                known, refreshed = self.pids(), now
            rss, anon, largest = memory(known)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_anon = max(self.peak_anon, anon)
            self.peak_largest_anon = max(self.peak_largest_anon, largest)
            self.halt.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join()
