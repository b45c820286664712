"""Tools for hostile tests against real processes: channels whose records are written by hand,
many concurrent clients that keep what they received when cut off, a /healthz latency probe,
the memory of a process tree, and a small tmpfs to fill up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import Proxy


def record(filename: str, data: bytes) -> dict[str, object]:
    """A repodata record that lists `data` under `filename` (sha256, md5 and size)."""
    name, version, build = filename.rsplit(".conda", 1)[0].rsplit("-", 2)
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
        "size": len(data),
    }


def listed_channel(
    directory: Path,
    listed: dict[str, bytes],
    unlisted: dict[str, bytes] | None = None,
) -> Path:
    """A channel without shards: `listed` files ("subdir/name.conda") appear in their subdir's
    repodata.json with sha256 and size; `unlisted` files are served but no record names them.
    A subdir with only unlisted files has no repodata at all."""
    by_subdir: dict[str, dict[str, object]] = {}
    for path, data in listed.items():
        subdir, name = path.split("/")
        by_subdir.setdefault(subdir, {})[name] = record(name, data)
    for path, data in {**listed, **(unlisted or {})}.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(data)
    for subdir in {*by_subdir, "noarch"}:
        document = {
            "info": {"subdir": subdir},
            "repodata_version": 1,
            "packages": {},
            "packages.conda": by_subdir.get(subdir, {}),
        }
        (directory / subdir).mkdir(parents=True, exist_ok=True)
        (directory / subdir / "repodata.json").write_text(json.dumps(document))
    return directory


@dataclass
class Got:
    """What one client received: the status, the body bytes that arrived, and whether the
    body ended cleanly (False: the connection was cut before the announced length)."""

    status: int
    body: bytes
    complete: bool
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


async def get(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> Got:
    body = bytearray()
    async with client.stream("GET", url, headers=headers or {}) as response:
        try:
            async for chunk in response.aiter_raw(1 << 20):
                body += chunk
        except httpx.HTTPError:
            return Got(response.status_code, bytes(body), False, dict(response.headers))
        return Got(response.status_code, bytes(body), True, dict(response.headers))


def get_all(url: str, headers: Sequence[dict[str, str] | None], timeout: float = 30) -> list[Got]:
    """One concurrent GET of `url` per entry of `headers`, each on its own connection."""

    async def run() -> list[Got]:
        limits = httpx.Limits(max_connections=len(headers), max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, verify=False) as client:
            return list(await asyncio.gather(*(get(client, url, h) for h in headers)))

    return asyncio.run(asyncio.wait_for(run(), timeout + 5))


def http(timeout: float = 10) -> httpx.Client:
    """A client for the loopback test processes (plain HTTP: no CA bundle to load, which
    costs 30 ms per client)."""
    return httpx.Client(timeout=timeout, verify=False)


def get_one(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Got:
    return get_all(url, [headers], timeout)[0]


def wait_for(predicate: Callable[[], bool], seconds: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached within {seconds}s"
        time.sleep(0.02)


def all_workers_started(proxy: Proxy, workers: int) -> Proxy:
    """Wait until every worker has finished its start-up (its temp-file sweep included):
    /healthz answers as soon as the first one has."""
    wait_for(
        lambda: sum(e.get("event") == "started" for e in proxy.events()) >= workers,
        20,
        f"{workers} workers started",
    )
    return proxy


def no_crash_in_log(log: str) -> None:
    """A refused input is one structured event, never a traceback or a closed descriptor."""
    for needle in ("Traceback", "Bad file descriptor", "Errno 9", "Fatal Python error"):
        assert needle not in log, f"{needle!r} in the proxy log:\n{log[-4000:]}"


def _poll_health(url: str, interval: float, timeout: float, stop: Any, out: Any) -> None:
    """The probe's own process: poll until `stop` is set, then send every latency."""
    latencies: list[float] = []
    with http(timeout) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started if ok else timeout)
            if len(latencies) == 1:
                out.send(None)  # answered once: running
            stop.wait(interval)
    out.send(latencies)


class HealthProbe:
    """Polls /healthz every `interval` seconds on one keep-alive connection and records each
    answer's latency (a failed or timed-out answer counts as `timeout`). It runs in a process
    of its own, so the test's own work (encoding a bomb to send the upstream, say) cannot hold
    the GIL under a measurement; `latencies` is filled when the `with` block ends."""

    def __init__(self, base_url: str, interval: float = 0.01, timeout: float = 2.0) -> None:
        context = multiprocessing.get_context("spawn")
        self.timeout = timeout
        self.latencies: list[float] = []
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_poll_health,
            args=(base_url + "/healthz", interval, timeout, self._stop, sender),
            daemon=True,
        )

    def __enter__(self) -> HealthProbe:
        self._process.start()
        if not self._results.poll(30):
            self._process.kill()
            raise AssertionError("/healthz never answered the probe")
        self._results.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._results.poll(15):
            self.latencies = self._results.recv()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def percentile(self, p: float) -> float:
        """Nearest rank: the smallest latency that `p` of the answers did not exceed."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(len(ordered) * p) - 1)]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def tree_memory(pid: int) -> tuple[int, int]:
    """(current, peak) resident bytes summed over `pid` and its descendants (VmRSS, VmHWM)."""
    rss = hwm = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1]) * 1024
    return rss, hwm


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (needs root, as in CI); unmounted lazily after."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"cannot mount a {size} tmpfs at {path} (these tests need root to simulate a full "
            f"disk): {done.stderr.strip() or done.returncode}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(path: Path) -> Path:
    """Fill the filesystem holding `path` until it refuses another byte."""
    filler = path / "filler"
    block = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as f:
        for small in (False, True):
            while True:
                try:
                    f.write(block[:512] if small else block)
                except OSError:
                    break
    return filler
