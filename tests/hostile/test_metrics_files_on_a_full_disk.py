"""The disk under prometheus-client's files fills up: where /dev/shm is not writable (a
read-only root in a container, no /dev/shm mounted) they live under the cache, whose disk
fills by design; a small /dev/shm fills too.

prometheus-client writes its values through a mapping of a sparse file. Before: once the cache's
disk was full, the first request whose answer made a new label set (a 414, a 401, a status
first seen) touched a page the filesystem had no block for, and the worker died of SIGBUS at
once, without a line in the log (with one worker, the whole proxy). Now every page has its
block reserved before it is written (cache/metric_files.py): the proxy answers, and /metrics
too.

Real processes: `condaproxy serve` in a mount namespace of its own where /dev/shm is a
read-only filesystem, its cache on a small tmpfs (needs root, as in CI); one worker and two.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import fill, listed_channel, tmpfs
from tests.support.processes import ROOT, Upstream, free_port, wait_http, write_config

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/small-1.0-0.conda"
DATA = {PACKAGE: os.urandom(1 << 20)}  # cached: what eviction frees to open the index
TIMEOUT = 10
LONG = "a" * 9000

# Requests whose answers (route kind and status) the proxy has not counted yet.
NEW_LABELS = [
    ("GET", f"/ch/linux-64/{LONG}", {}),
    ("POST", "/api/channels/ch/upload/x-1-0.conda", {"x-api-key": "not-a-token-at-all"}),
    ("GET", "/ch/linux-64/small-1.0-0.conda", {"range": "bytes=99999999-"}),
    ("PUT", "/api/cache", {}),
    ("PATCH", "/ch/linux-64/repodata.json", {}),
    ("OPTIONS", "/metrics", {}),
    ("DELETE", "/ui", {}),
    ("GET", "/api/stats", {}),
]


def namespaces_work() -> bool:
    try:
        done = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


class Serve:
    """`condaproxy serve` where /dev/shm is read-only, its cache on `disk`."""

    def __init__(self, config: Path, workers: int, log: Path) -> None:
        self.config, self.workers, self.log = config, workers, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Serve:
        port = free_port()
        command = shlex.join(
            [
                *(sys.executable, "-m", "condaproxy", "serve", "--config", str(self.config)),
                *("--port", str(port), "--workers", str(self.workers)),
            ]
        )
        script = (
            "mount --make-rprivate / && mount -t tmpfs -o ro,size=1m tmpfs /dev/shm && "
            f"cd {shlex.quote(str(ROOT))} && exec {command}"
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "sh", "-c", script],
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        wait_http(self.url + "/healthz", self.proc)
        return self

    def alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"the proxy died ({self.proc and self.proc.returncode}):\n{self.log.read_text()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)


@pytest.fixture(params=[1, 2], ids=["1 worker", "2 workers"])
def serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Serve, Path]]:
    if os.geteuid() != 0 or not namespaces_work():  # a missing feature of the machine: a failure
        raise RuntimeError("these tests need root and mount namespaces (unshare -m), as in CI")
    upstream = Upstream(listed_channel(tmp_path / "channel", DATA)).start()
    with tmpfs(tmp_path / "disk", "8m") as disk:
        config = write_config(
            tmp_path / "proxy.toml",
            disk / "cache",
            {"ch": {"upstream": upstream.url}},
            600,
            extra='min_free = "1KiB"\n',
        )
        proxy = Serve(config, request.param, tmp_path / "serve.log").start()
        try:
            yield proxy, disk
        finally:
            proxy.stop()
            upstream.stop()


def answered(proxy: Serve) -> None:
    """Every request answered (none refused for want of a process), whichever worker."""
    for _ in range(3):
        for method, path, headers in NEW_LABELS:
            try:
                got = httpx.request(method, proxy.url + path, headers=headers, timeout=TIMEOUT)
            except httpx.TransportError as exc:
                pytest.fail(f"{method} {path[:60]}: no answer ({exc!r}): the worker died")
            assert got.status_code < 500 or got.status_code == 503, (method, path[:60], got)
    assert httpx.get(proxy.url + "/metrics", timeout=TIMEOUT).status_code == 200
    assert httpx.get(proxy.url + "/healthz", timeout=TIMEOUT).status_code == 200
    proxy.alive()


def test_new_label_sets_on_a_full_disk_are_answered(serve: tuple[Serve, Path]) -> None:
    proxy, disk = serve
    for path in ("/ch/linux-64/repodata.json", f"/ch/{PACKAGE}"):
        assert httpx.get(proxy.url + path, timeout=TIMEOUT).status_code == 200
    assert list((disk / "cache" / "metrics").rglob("*.db")), "the metrics are not on the disk"
    fill(disk)
    answered(proxy)


def test_a_restart_on_a_full_disk_serves(serve: tuple[Serve, Path]) -> None:
    """Each worker makes its metrics files at start: on a full disk, the first value written
    killed it before it answered anything (one worker: the proxy never came up)."""
    proxy, disk = serve
    for path in ("/ch/linux-64/repodata.json", f"/ch/{PACKAGE}"):
        assert httpx.get(proxy.url + path, timeout=TIMEOUT).status_code == 200
    proxy.stop()
    blobs = [p for p in (disk / "cache" / "blobs").rglob("*") if p.is_file()]
    assert blobs, "no cached file for eviction to free at start"
    fill(disk)
    proxy.start()
    answered(proxy)
