"""A cached file written over in place while the proxy runs (the disk is hostile, too).

Another program with access to the cache (a second proxy pointed at the same directory by
mistake, a backup tool restoring over it, `dd conv=notrunc`, bit rot fixed up by hand) can
change a blob or a metadata file after the proxy has checked and served it, keeping its size
and even its inode. Before: a file was hashed once per process, so every later request got the
changed bytes under the original sha256 and ETag. Now what was checked is remembered with the
file's inode and mtime, every open compares them, and a file that changed is hashed again: a
package that no longer matches is dropped and fetched again from the upstream, metadata is
dropped and fetched again, an upload is a 503 until uploaded again; never the changed bytes.

Real processes: the test upstream and `condaproxy serve` (one worker, and two: the worker that
did not write a file checks it too).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import listed_channel, no_crash_in_log, upload
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

SMALL = "linux-64/small-1.0-0.conda"  # gathered in memory, committed behind
BIG = "linux-64/big-1.0-0.conda"  # streamed through a temp file
DATA = {SMALL: os.urandom(200_000), BIG: os.urandom(3 << 20)}
METADATA = (
    "linux-64/repodata.json",
    "linux-64/repodata.json.zst",
    "linux-64/current_repodata.json",
)
WRITER = "ci-write-token-1"
TIMEOUT = 30


def flip_a_byte(path: Path) -> None:
    """One byte changed, in place: same inode, same size."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


def zero_it(path: Path) -> None:
    """Truncated and refilled with as many zero bytes: same inode, same size."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(bytes(size))


def copy_renamed_over(path: Path) -> None:
    """Other bytes of the same size renamed over it: another inode."""
    other = path.with_name(path.name + ".other")
    other.write_bytes(os.urandom(os.path.getsize(path)))
    os.replace(other, path)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "a byte flipped in place": flip_a_byte,
    "zeroed in place": zero_it,
    "a copy renamed over it": copy_renamed_over,
}


@dataclass
class Running:
    upstream: Upstream
    proxy: Proxy
    cache: Path

    def get(self, path: str) -> httpx.Response:
        headers = {"accept-encoding": "identity"}
        return httpx.get(f"{self.proxy.url}/ch/{path}", headers=headers, timeout=TIMEOUT)

    def blob(self, data: bytes) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        [blob] = [p for p in self.cache.rglob(digest) if p.is_file()]
        return blob

    def metadata_files(self) -> list[Path]:
        return sorted(p for p in (self.cache / "meta").rglob("*") if p.is_file())


@pytest.fixture(params=[1, 2], ids=["1 worker", "2 workers"])
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    upstream = Upstream(listed_channel(tmp_path / "channel", DATA)).start()
    cache = tmp_path / "cache"
    config = write_config(
        tmp_path / "proxy.toml",
        cache,
        {"ch": {"upstream": upstream.url}},
        600,
        tokens={"ci": {"token": WRITER, "roles": {"ch": "write"}}},
    )
    proxy = Proxy(config, workers=request.param).start()
    try:
        yield Running(upstream, proxy, cache)
    finally:
        proxy.stop()
        upstream.stop()
    no_crash_in_log(proxy.log())


def served_several_times(running: Running, path: str, body: bytes) -> None:
    """Enough requests that every worker has served (and so checked) the file."""
    for _ in range(6):
        got = running.get(path)
        assert got.status_code == 200, (path, got.text[:200])
        assert got.content == body


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("path", [SMALL, BIG])
def test_a_package_written_over_is_fetched_again_never_served(
    running: Running, path: str, damage: str
) -> None:
    served_several_times(running, path, DATA[path])
    assert running.upstream.count("GET", f"/{path}") == 1
    DAMAGE[damage](running.blob(DATA[path]))
    for _ in range(4):  # whichever worker answers
        got = running.get(path)
        assert got.status_code == 200, got.text[:200]
        assert hashlib.sha256(got.content).digest() == hashlib.sha256(DATA[path]).digest()
    assert running.upstream.count("GET", f"/{path}") == 2  # fetched again, once
    assert "damaged blob refused" in running.proxy.log()
    assert hashlib.sha256(running.blob(DATA[path]).read_bytes()).digest() == (
        hashlib.sha256(DATA[path]).digest()
    ), "the cache did not mend itself"


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_upload_written_over_is_refused_never_served(running: Running, damage: str) -> None:
    work = running.cache.parent
    package = build_package(Pkg("internal-tool", "1.0", "h0", "linux-64"), work / "w", work / "o")
    data = package.read_bytes()
    posted = upload(running.proxy, package.name, data, WRITER)
    assert posted.status_code == 201, posted.text
    path = f"linux-64/{package.name}"
    served_several_times(running, path, data)
    DAMAGE[damage](running.blob(data))
    for _ in range(4):
        got = running.get(path)
        assert got.status_code == 503, (got.status_code, got.content[:100])
        assert "damaged" in got.json()["error"]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_metadata_written_over_is_fetched_again_never_served(running: Running, damage: str) -> None:
    before = {}
    for path in METADATA:
        got = running.get(path)
        assert got.status_code == 200
        before[path] = got.content
        served_several_times(running, path, got.content)
    for file in running.metadata_files():
        DAMAGE[damage](file)
    for path in METADATA:
        for _ in range(4):
            got = running.get(path)
            if got.status_code == 503:  # found damaged while it was served: dropped
                assert "damaged" in got.json()["error"]
                continue
            assert got.status_code == 200, (path, got.status_code, got.text[:200])
            assert got.content == before[path], path
    assert "cached metadata damaged on disk" in running.proxy.log()
