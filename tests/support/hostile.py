"""Tools for hostile tests against real processes: channels whose records are written by hand,
an upstream and a proxy shared by a module's tests (`HostileSetup`) or started again and again
on one cache (`one_cache`), many concurrent clients that keep what they received when cut off,
a /healthz latency probe, the memory of a process tree, and a small tmpfs to fill up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from tests.support.processes import ROOT, Proxy, Upstream, free_port, write_config

ADMIN_TOKEN = "admin-token-000001"
ZST = ("/linux-64/repodata.json.zst",)  # a `missing` for tests of the plain JSON


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


class HostileSetup:
    """A test upstream over a `listed_channel` and a `condaproxy serve` proxying it as channel
    `ch`, shared by a module's tests (`fixture`), with a client. `fresh()` forgets everything
    the proxy cached (an admin purge) and every answer set on the upstream; `missing` are
    upstream paths that answer 404 after each `fresh()` (repodata.json.zst: the plain JSON is
    the body the proxy takes); `identity` asks for `accept-encoding: identity` on every `get`.
    A module subclasses it for steps of its own."""

    def __init__(
        self,
        upstream: Upstream,
        proxy: Proxy,
        *,
        missing: Sequence[str] = (),
        identity: bool = False,
        timeout: float = 30,
    ) -> None:
        self.upstream, self.proxy = upstream, proxy
        self.missing, self.identity = tuple(missing), identity
        self.client = httpx.Client(timeout=timeout)

    def purge(self, scope: str = "") -> None:
        """DELETE /api/cache{scope} as an admin."""
        url = f"{self.proxy.url}/api/cache{scope}"
        self.client.delete(url, headers={"x-api-key": ADMIN_TOKEN}).raise_for_status()

    def fresh(self) -> None:
        self.purge()
        self.upstream.reset()
        for path in self.missing:
            self.upstream.override(path, b"", 404)

    def get(self, path: str) -> httpx.Response:
        headers = {"accept-encoding": "identity"} if self.identity else {}
        return self.client.get(f"{self.proxy.url}/ch/{path}", headers=headers)

    def stop_upstream(self) -> None:
        self.upstream.stop()

    @classmethod
    @contextlib.contextmanager
    def started(
        cls,
        base: Path,
        listed: dict[str, bytes],
        unlisted: dict[str, bytes] | None = None,
        *,
        ttl: int = 60,
        channels: Sequence[str] = ("ch",),
        env: dict[str, str] | None = None,
        **options: Any,
    ) -> Iterator[Self]:
        """Start both under `base` (the upstream's files in base/up), with `ttl` as
        repodata_ttl, an admin token and each of `channels` proxying the upstream; stop them
        when the block ends, then check the proxy's log holds no crash. `options` go to
        the constructor."""
        upstream = Upstream(listed_channel(base / "up", listed, unlisted)).start()
        admin: dict[str, object] = {"token": ADMIN_TOKEN, "roles": {"*": "admin"}}
        proxied: dict[str, dict[str, object]] = {n: {"upstream": upstream.url} for n in channels}
        config = write_config(
            base / "proxy.toml", base / "cache", proxied, ttl, tokens={"ops": admin}
        )
        try:
            proxy = Proxy(config, env=env or {}).start()
        except BaseException:
            upstream.stop()
            raise
        setup = cls(upstream, proxy, **options)
        try:
            yield setup
        finally:
            setup.client.close()
            proxy.stop()
            setup.stop_upstream()
        no_crash_in_log(proxy.log())

    @classmethod
    def fixture(cls, name: str, *args: Any, **options: Any) -> Any:
        """The module-scoped pytest fixture `setup`: `started(a temp dir named name, *args,
        **options)`."""

        @pytest.fixture(scope="module", name="setup")
        def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileSetup]:
            with cls.started(tmp_path_factory.mktemp(name), *args, **options) as started:
                yield started

        return setup


@contextlib.contextmanager
def one_cache(
    tmp_path: Path,
    start_proxy: Callable[..., Proxy],
    listed: dict[str, bytes],
    writer: str | None = None,
) -> Iterator[tuple[Upstream, Callable[[], Proxy]]]:
    """A test upstream over `listed_channel(tmp_path / "channel", listed)`, and a way to start
    proxies (conftest's `start_proxy`) serving it as `ch` on one cache, tmp_path / "cache", one
    after another or side by side: for what a proxy finds in its cache when it starts.
    `writer`: a token that may upload to `ch`. The upstream stops when the block ends."""
    upstream = Upstream(listed_channel(tmp_path / "channel", listed)).start()
    channels = {"ch": {"upstream": upstream.url}}
    tokens = {"ci": {"token": writer, "roles": {"ch": "write"}}} if writer else None
    try:
        yield upstream, lambda: start_proxy(channels, cache=tmp_path / "cache", tokens=tokens)
    finally:
        upstream.stop()


def upload(proxy: Proxy, filename: str, data: bytes, token: str) -> httpx.Response:
    """POST `data` to channel `ch` as the upload `filename`."""
    return httpx.post(
        f"{proxy.url}/api/channels/ch/upload/{filename}",
        content=data,
        headers={"x-api-key": token},
        timeout=60,
    )


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    """`condaproxy serve` on `config` run to its end (a start that is refused): its exit
    status and what it wrote."""
    port = str(free_port())
    command = [sys.executable, "-m", "condaproxy", "serve", "--config", str(config), "--port", port]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)


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


def workers_of(proxy: Proxy) -> list[int]:
    """uvicorn's worker processes (spawned children), not multiprocessing's resource tracker."""
    assert proxy.proc is not None
    found = []
    for pid in _children(proxy.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


@contextlib.contextmanager
def admin_proxy(channel_dir: Path, base: Path, admin: str) -> Iterator[Proxy]:
    """A proxy over a real upstream serving `channel_dir` as channel `pub`, with one token
    `admin` holding the admin role everywhere; stopped with its upstream after."""
    upstream = Upstream(channel_dir).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}},
        tokens={"ops": {"token": admin, "roles": {"*": "admin"}}},
    )
    started = Proxy(config).start()
    try:
        yield started
    finally:
        started.stop()
        upstream.stop()


def kill_a_worker(proxy: Proxy, settle: float = 3.0) -> None:
    """SIGKILL one of uvicorn's workers, wait until another is in its place, then `settle`
    seconds: long enough for the new one to import the app and open the cache (or die of it).
    The proxy must still be running with all its workers."""
    before = workers_of(proxy)
    [victim, *_] = before
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # uvicorn starts another in its place
        if len([p for p in workers_of(proxy) if p != victim]) == len(before):
            break
        time.sleep(0.2)
    time.sleep(settle)
    assert proxy.proc is not None and proxy.proc.poll() is None, proxy.log()[-3000:]
    assert len(workers_of(proxy)) == len(before), proxy.log()[-3000:]


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


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the proxy sends on `sock` until it closes the connection (or resets it, or
    the socket's timeout passes)."""
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return got
