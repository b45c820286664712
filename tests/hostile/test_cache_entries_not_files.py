"""Something other than a file where the cache keeps one (the disk is hostile, too).

A crash, a careless `cp -r`, a restore from backup or someone with access to the disk can leave
a directory, a symbolic link (to `/etc/passwd`, to another cached file, to nothing) or a fifo
where a package blob or a metadata file belongs, or a file where one of the cache's own
directories belongs. Before: a directory in a blob's place was a 500 on every request for it
(it could not be removed as a file, nor renamed over), a fifo hung every request for it and
then the process at exit, and a file in place of `tmp/` or `meta/` failed every metadata
request. Now only a regular file is ever read (never through a link, never waiting on a fifo);
anything else is damaged, cleared and fetched again, and the layout's directories are made
again: every client gets the right bytes, and the cache mends itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import listed_channel
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/pkg-1.0-0.conda"
OTHER = "linux-64/other-1.0-0.conda"
DATA = os.urandom(1 << 20)
OTHER_DATA = os.urandom(3 << 20)  # over SMALL_BODY: a temp file, announced to other workers
METADATA = (
    "linux-64/repodata.json",
    "linux-64/repodata.json.zst",
    "linux-64/repodata.json.bz2",
    "linux-64/current_repodata.json",
)
WRITE = "ci-write-token-1"
TIMEOUT = 10  # a fifo read in the proxy used to hang the request for ever


def a_directory(path: Path) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


def a_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def a_link_to_a_system_file(path: Path) -> None:
    path.unlink()
    path.symlink_to("/etc/passwd")


def a_dangling_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "nothing-here")


NOT_A_FILE: dict[str, Callable[[Path], None]] = {
    "directory": a_directory,
    "fifo": a_fifo,
    "link to /etc/passwd": a_link_to_a_system_file,
    "dangling link": a_dangling_link,
}


@dataclass
class Served:
    upstream: Upstream
    proxy: Proxy
    cache: Path
    expected: dict[str, bytes]  # what each path answered before anything was touched

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.proxy.url}/ch/{path}", timeout=TIMEOUT)

    def blob(self) -> Path:
        digest = hashlib.sha256(DATA).hexdigest()
        [blob] = [p for p in (self.cache / "blobs").rglob(digest)]
        return blob

    def metadata_files(self) -> list[Path]:
        return sorted(p for p in (self.cache / "meta").rglob("*") if p.is_file())

    def restart(self) -> None:
        self.proxy.stop()
        self.proxy = Proxy(self.proxy.config, workers=self.proxy.workers).start()

    def assert_every_answer_right(self, tries: int = 1) -> None:
        """Every path answers its own bytes; a metadata file found damaged while being served
        may first be one 503 (it is dropped and fetched again), never a 500 or other bytes."""
        for path, body in {**self.expected, OTHER: OTHER_DATA}.items():
            for attempt in range(tries + 1):
                got = self.get(path)
                if got.status_code == 503 and attempt < tries:
                    assert "damaged" in got.json()["error"]
                    continue
                assert got.status_code == 200, (path, got.status_code, got.text[:200])
                assert hashlib.sha256(got.content).digest() == hashlib.sha256(body).digest()
                break
        assert "Traceback" not in self.proxy.log()
        assert '"status":500' not in self.proxy.log()


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    workers = getattr(request, "param", 1)
    upstream = Upstream(
        listed_channel(tmp_path / "channel", {PACKAGE: DATA, OTHER: OTHER_DATA})
    ).start()
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "proxy.toml", cache, {"ch": {"upstream": upstream.url}})
    proxy = Proxy(config, workers=workers)
    proxy.start()
    expected = {}
    for path in (PACKAGE, *METADATA):
        got = httpx.get(f"{proxy.url}/ch/{path}", timeout=TIMEOUT)
        assert got.status_code == 200
        expected[path] = got.content
    state = Served(upstream, proxy, cache, expected)
    try:
        yield state
    finally:
        state.proxy.stop(kill=True)
        upstream.stop()


@pytest.mark.parametrize("kind", list(NOT_A_FILE))
def test_a_package_blob_that_is_not_a_file_is_fetched_again(served: Served, kind: str) -> None:
    served.proxy.stop()
    blob = served.blob()
    NOT_A_FILE[kind](blob)
    served.restart()
    served.assert_every_answer_right()
    assert blob.is_file() and not blob.is_symlink()
    assert hashlib.sha256(blob.read_bytes()).digest() == hashlib.sha256(DATA).digest()
    assert served.upstream.count("GET", f"/{PACKAGE}") == 2  # fetched again, once
    assert Path("/etc/passwd").exists()


@pytest.mark.parametrize("kind", list(NOT_A_FILE))
def test_metadata_files_that_are_not_files_are_fetched_again(served: Served, kind: str) -> None:
    served.proxy.stop()
    for path in served.metadata_files():
        NOT_A_FILE[kind](path)
    served.restart()
    served.assert_every_answer_right()
    assert all(not p.is_symlink() for p in (served.cache / "meta").rglob("*"))


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_entries_replaced_while_running_are_fetched_again(served: Served, kind: str) -> None:
    """Replaced behind a running proxy (whose checks of them are done): still never a 500,
    a hang or other bytes, and the cache mends itself."""
    NOT_A_FILE[kind](served.blob())
    for path in served.metadata_files():
        NOT_A_FILE[kind](path)
    served.assert_every_answer_right(tries=1)
    served.assert_every_answer_right(tries=0)  # mended: right away, from then on


def _file_in_place_of(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.write_text("not a directory")


@pytest.mark.parametrize(
    "where",
    ["tmp", "blobs", "meta", "a blob's fan-out directory", "locks", "inflight", "uploads/changed"],
)
@pytest.mark.parametrize("when", ["stopped", "running"])
@pytest.mark.parametrize("served", [2], indirect=True)  # workers: locks and notes are shared
def test_a_file_in_place_of_a_cache_directory_is_mended(
    served: Served, where: str, when: str
) -> None:
    directory = served.blob().parent if where.startswith("a blob") else served.cache / where
    if when == "stopped":
        served.proxy.stop()
        _file_in_place_of(directory)
        served.restart()
    else:
        _file_in_place_of(directory)
    served.assert_every_answer_right(tries=1)
    served.assert_every_answer_right(tries=0)
    assert directory.is_dir()
    ready = httpx.get(f"{served.proxy.url}/readyz", timeout=TIMEOUT).json()
    assert ready["caching"] is True, ready


@pytest.mark.parametrize("kind", list(NOT_A_FILE))
def test_an_upload_that_is_not_a_file_is_a_503_until_uploaded_again(
    tmp_path: Path, kind: str
) -> None:
    """An upload is the only copy: something else in its place is refused as damaged (never
    the upstream's file of its name, never a hang), and an admin's upload again mends it."""
    package = build_package(
        Pkg("internal-tool", "1.0", "h0", "linux-64"), tmp_path / "w", tmp_path / "o"
    )
    data = package.read_bytes()
    name = f"linux-64/{package.name}"
    upstream = Upstream(listed_channel(tmp_path / "channel", {name: OTHER_DATA})).start()
    cache = tmp_path / "cache"
    tokens = {"ci": {"token": WRITE, "roles": {"ch": "write"}}}
    config = write_config(
        tmp_path / "proxy.toml", cache, {"ch": {"upstream": upstream.url}}, tokens=tokens
    )
    proxy = Proxy(config).start()
    upload = f"{proxy.url}/api/channels/ch/upload/{package.name}"
    try:
        posted = httpx.post(upload, content=data, headers={"x-api-key": WRITE}, timeout=60)
        assert posted.status_code == 201, posted.text
        proxy.stop()
        [blob] = list((cache / "uploads" / "blobs").rglob(hashlib.sha256(data).hexdigest()))
        NOT_A_FILE[kind](blob)
        proxy = Proxy(config, port=proxy.port).start()
        got = httpx.get(f"{proxy.url}/ch/{name}", timeout=TIMEOUT)
        assert got.status_code == 503 and "damaged" in got.json()["error"]
        again = httpx.post(
            f"{upload}?force=true", content=data, headers={"x-api-key": WRITE}, timeout=60
        )
        assert again.status_code == 201, again.text
        got = httpx.get(f"{proxy.url}/ch/{name}", timeout=TIMEOUT)
        assert (got.status_code, got.content) == (200, data)
        assert upstream.count("GET", f"/{name}") == 0
        assert Path("/etc/passwd").exists()
    finally:
        proxy.stop(kill=True)
        upstream.stop()
