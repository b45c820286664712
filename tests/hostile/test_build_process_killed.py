"""The build process dies under its work: SIGBUS (what a cached file cut short on disk under its
map sends), the kernel's OOM killer or an operator's SIGKILL, a crash.

Metadata past 8 MB is checked, rewritten, merged and filtered in a process of its own
(cache/workers.py). Before: the request whose build it was got a 500 (BrokenProcessPool), and
so did every big build after it until the dead pool was retired, idle_exit later. Now a
process that dies is replaced at once and the work runs again in the new one: the client gets
the document; a process that dies again is a 503 naming it, and the next request is served.

Real processes: the test upstream and `condaproxy serve` (one worker, and two).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import listed_channel, no_crash_in_log, process_tree
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

RECORDS = 60_000  # about 21 MB of repodata.json: past the 8 MB from which builds go to a process
PATH = "/ch/linux-64/repodata.json"
ADMIN = "admin-token-000001"
TIMEOUT = 60


def big_channel(directory: Path) -> Path:
    listed_channel(directory, {"linux-64/small-1.0-0.conda": os.urandom(2000)})
    document_path = directory / "linux-64" / "repodata.json"
    document = json.loads(document_path.read_text())
    for i in range(RECORDS):
        document["packages.conda"][f"pkg{i}-1.0-h{i}_0.conda"] = {
            "name": f"pkg{i}",
            "version": "1.0",
            "build": f"h{i}_0",
            "build_number": 0,
            "depends": ["python >=3.8"],
            "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
            "size": 1000 + i,
            "subdir": "linux-64",
        }
    document_path.write_text(json.dumps(document))
    return directory


def build_processes(proxy: Proxy) -> list[int]:
    """The proxy's build processes: the descendants that run below the server (niceness)."""
    assert proxy.proc is not None
    own = os.getpriority(os.PRIO_PROCESS, proxy.proc.pid)
    found = []
    for pid in process_tree(proxy.proc.pid):
        try:
            if os.getpriority(os.PRIO_PROCESS, pid) > own:
                found.append(pid)
        except OSError:
            continue
    return found


class Killer:
    """Sends `signum` to every build process that shows up, `times` times in all: each one is
    stopped first and left a moment, so that it has taken the work before it dies."""

    def __init__(self, proxy: Proxy, signum: int, times: int) -> None:
        self.proxy, self.signum, self.left = proxy, signum, times
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.left and time.monotonic() < deadline and not self.done.is_set():
            for pid in build_processes(self.proxy):
                try:
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(1.0)
                    os.kill(pid, self.signum)
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    continue
                self.left -= 1
                break
            time.sleep(0.02)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return big_channel(tmp_path_factory.mktemp("channel"))


@pytest.fixture(params=[1, 2], ids=["1 worker", "2 workers"])
def proxy(channel: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    upstream = Upstream(channel).start()
    admin: dict[str, object] = {"token": ADMIN, "roles": {"*": "admin"}}
    config = write_config(
        tmp_path / "proxy.toml",
        tmp_path / "cache",
        {"ch": {"upstream": upstream.url}},
        600,
        tokens={"ops": admin},
    )
    running = Proxy(config, workers=request.param).start()
    try:
        yield running
    finally:
        running.stop()
        upstream.stop()


def whole(got: httpx.Response) -> None:
    assert got.status_code == 200, got.text[:300]
    assert len(got.json()["packages.conda"]) == RECORDS + 1


def get(proxy: Proxy) -> httpx.Response:
    return httpx.get(proxy.url + PATH, headers={"accept-encoding": "identity"}, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "signum", [signal.SIGBUS, signal.SIGKILL, signal.SIGSEGV], ids=["SIGBUS", "SIGKILL", "SIGSEGV"]
)
def test_a_build_process_that_dies_once_is_replaced_and_the_build_done(
    proxy: Proxy, signum: int
) -> None:
    killer = Killer(proxy, signum, times=1)
    try:
        whole(get(proxy))
    finally:
        killer.stop()
    assert killer.left == 0, "no build process was seen"
    for _ in range(2):
        whole(get(proxy))
    no_crash_in_log(proxy.log())


def test_a_build_process_that_dies_again_is_a_503_then_served(proxy: Proxy) -> None:
    killer = Killer(proxy, signal.SIGKILL, times=2)
    try:
        got = get(proxy)
    finally:
        killer.stop()
    assert got.status_code == 503, got.text[:300]
    assert "build process died" in got.json()["error"]
    whole(get(proxy))
    no_crash_in_log(proxy.log())


def test_a_build_process_killed_while_idle_is_replaced(proxy: Proxy) -> None:
    whole(get(proxy))  # a build: the process lingers, idle, for a few seconds
    idle = build_processes(proxy)
    assert idle, "no idle build process"
    for pid in idle:
        os.kill(pid, signal.SIGKILL)
    purged = httpx.delete(
        proxy.url + "/api/cache/ch?metadata_only=true",
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=TIMEOUT,
    )
    assert purged.status_code == 200, purged.text
    whole(get(proxy))
    no_crash_in_log(proxy.log())
