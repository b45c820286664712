"""A symbolic link planted where the proxy creates its small state files: a lock (`locks/`), an
upload marker (`uploads/changed/`), the purge marker's temp file (`index/purged.<pid>`),
`alive.lock`.

Whoever can write in the cache directory (a shared volume, a careless chmod) but not elsewhere
could have the proxy, often root, create or truncate a file wherever a link pointed: the purge
marker's temp file, named after the worker's pid, was opened with O_TRUNC through a link (an
admin purge emptied the file it pointed at); a lock, a marker or alive.lock whose link pointed
at nothing made that file. Now creating never follows a link (as reading never did): only the
link is removed, and the proxy's own file made in its place.

Real processes: the test upstream and `condaproxy serve` (one worker, and two).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import _children, listed_channel, no_crash_in_log, upload
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

DATA = {"linux-64/small-1.0-0.conda": os.urandom(2000)}
WRITER = "ci-write-token-1"
ADMIN = "admin-token-000001"
PRECIOUS = b"a file outside the cache that the proxy must never touch\n"
TIMEOUT = 30


@dataclass
class Running:
    proxy: Proxy
    cache: Path
    outside: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.proxy.url}/ch/{path}", timeout=TIMEOUT)

    def traffic(self) -> None:
        for path in ("linux-64/repodata.json", "noarch/repodata.json", *DATA):
            got = self.get(path)
            assert got.status_code == 200, (path, got.text[:300])

    def purge(self) -> None:
        got = httpx.delete(
            f"{self.proxy.url}/api/cache/ch",
            headers={"authorization": f"Bearer {ADMIN}"},
            timeout=TIMEOUT,
        )
        assert got.status_code == 200, got.text

    def server_pids(self) -> list[int]:
        """The processes that serve: the `serve` process itself with one worker, its uvicorn
        workers with two."""
        assert self.proxy.proc is not None
        pid = self.proxy.proc.pid
        workers = [
            child
            for child in _children(pid)
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]
        return workers or [pid]

    def untouched(self) -> None:
        """Every target outside the cache as it was: the precious file unchanged, no file
        made where a link pointed at nothing."""
        assert (self.outside / "precious").read_bytes() == PRECIOUS
        made = sorted(p.name for p in self.outside.iterdir() if p.name != "precious")
        assert made == [], f"the proxy made files outside its cache: {made}"


@pytest.fixture(params=[1, 2], ids=["1 worker", "2 workers"])
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    upstream = Upstream(listed_channel(tmp_path / "channel", DATA)).start()
    config = write_config(
        tmp_path / "proxy.toml",
        tmp_path / "cache",
        {"ch": {"upstream": upstream.url}},
        600,
        tokens={
            "ci": {"token": WRITER, "roles": {"ch": "write"}},
            "ops": {"token": ADMIN, "roles": {"*": "admin"}},
        },
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(PRECIOUS)
    proxy = Proxy(config, workers=request.param).start()
    try:
        yield Running(proxy, tmp_path / "cache", outside)
    finally:
        proxy.stop()
        upstream.stop()
    no_crash_in_log(proxy.log())


def link(path: Path, running: Running, target: str) -> None:
    """`path` made a link to the precious file, or to a file outside that does not exist."""
    if os.path.lexists(path):
        os.unlink(path)
    pointed = running.outside / ("precious" if target == "existing" else f"made-{path.name}")
    os.symlink(pointed, path)


TARGETS = ["existing", "dangling"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_link_at_the_purge_markers_temp_name(running: Running, target: str) -> None:
    running.traffic()
    for pid in running.server_pids():
        link(running.cache / "index" / f"purged.{pid}", running, target)
    running.purge()
    running.untouched()
    running.traffic()


@pytest.mark.parametrize("running", [2], ids=["2 workers"], indirect=True)  # one takes no
@pytest.mark.parametrize("target", TARGETS)  # cross-process locks: it makes no lock files
def test_links_in_place_of_the_lock_files(running: Running, target: str) -> None:
    running.traffic()
    locks = sorted((running.cache / "locks").iterdir())
    assert locks, "no lock file to replace"
    for path in locks:
        link(path, running, target)
    running.purge()
    running.traffic()  # the same keys locked again
    running.untouched()


@pytest.mark.parametrize("target", TARGETS)
def test_links_in_place_of_the_upload_markers(running: Running, target: str) -> None:
    work = running.cache.parent
    package = build_package(Pkg("internal-tool", "1.0", "h0", "linux-64"), work / "w", work / "o")
    first = upload(running.proxy, package.name, package.read_bytes(), WRITER)
    assert first.status_code == 201, first.text
    markers = sorted((running.cache / "uploads" / "changed").iterdir())
    assert markers, "no upload marker to replace"
    for path in markers:
        link(path, running, target)
    for marker in markers:  # the temp names the next change will use, too
        for pid in running.server_pids():
            for n in range(4):
                link(Path(f"{marker}.{pid}.{n}.tmp"), running, target)
    other = build_package(Pkg("internal-tool", "2.0", "h0", "linux-64"), work / "w2", work / "o2")
    second = upload(running.proxy, other.name, other.read_bytes(), WRITER)
    assert second.status_code == 201, second.text
    for _ in range(4):  # whichever worker answers sees both uploads
        listed = running.get("linux-64/repodata.json").json()["packages.conda"]
        assert {package.name, other.name} <= set(listed)
    running.untouched()


@pytest.mark.parametrize("target", TARGETS)
def test_a_link_in_place_of_alive_lock_at_a_restart(running: Running, target: str) -> None:
    running.traffic()
    running.proxy.stop()
    link(running.cache / "alive.lock", running, target)
    running.proxy.start()
    running.traffic()
    running.untouched()
