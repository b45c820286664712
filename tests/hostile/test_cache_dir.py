"""A damaged cache directory at start-up is never served from (issue 7, section 7: the disk).

Whatever a crash, a full disk, a careless copy or bit rot left in `cache.path` (a blob cut
short, a blob whose bytes are not the ones its name promises, an index row whose blob is
gone), a real `condaproxy serve` started on it gives every client the whole, verified file:
the damaged copy is dropped and fetched again, never sent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import listed_channel, one_cache, serve_once, upload
from tests.support.processes import Upstream, write_config

pytestmark = pytest.mark.integration

FILE = "linux-64/pkg-1.0-0.conda"
DATA = os.urandom(3 << 20)
DIGEST = hashlib.sha256(DATA).hexdigest()
WRITE = "ci-write-token-1"


def truncate(blob: Path) -> None:
    with blob.open("r+b") as f:
        f.truncate(blob.stat().st_size // 2)


def flip_a_byte(blob: Path) -> None:
    with blob.open("r+b") as f:
        at = min(12345, blob.stat().st_size // 2)
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def empty(blob: Path) -> None:
    blob.write_bytes(b"")


def delete(blob: Path) -> None:
    blob.unlink()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "cut short": truncate,
    "wrong bytes": flip_a_byte,
    "empty": empty,
    "missing": delete,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_blob_found_at_start_is_refetched_never_served(
    tmp_path: Path, start_proxy, damage: str
) -> None:
    cache = tmp_path / "cache"
    with one_cache(tmp_path, start_proxy, {FILE: DATA}) as (upstream, start):
        proxy = start()
        first = httpx.get(f"{proxy.url}/ch/{FILE}", timeout=30)
        assert (first.status_code, hashlib.sha256(first.content).hexdigest()) == (200, DIGEST)
        proxy.stop()
        [blob] = [p for p in (cache / "blobs").rglob(DIGEST) if p.is_file()]
        DAMAGE[damage](blob)

        proxy = start()
        for _ in range(2):  # the first answer, and the one from the copy it left behind
            with httpx.stream("GET", f"{proxy.url}/ch/{FILE}", timeout=30) as got:
                assert got.status_code == 200
                body = got.read()
            assert hashlib.sha256(body).hexdigest() == DIGEST
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == DIGEST
        assert upstream.count("GET", f"/{FILE}") == 2  # fetched again, once


def test_a_damaged_upload_is_refused_never_sent_nor_replaced_from_upstream(
    tmp_path: Path, start_proxy
) -> None:
    """An upload is the only copy: damaged, it is a 503 saying so (upload it again), never
    its bad bytes and never an upstream file of the same name."""
    package = build_package(
        Pkg("internal-tool", "1.0", "h0", "linux-64"), tmp_path / "w", tmp_path / "o"
    )
    data = package.read_bytes()
    cache = tmp_path / "cache"
    listed = {f"linux-64/{package.name}": DATA}
    with one_cache(tmp_path, start_proxy, listed, writer=WRITE) as (upstream, start):
        proxy = start()
        posted = upload(proxy, package.name, data, WRITE)
        assert posted.status_code == 201, posted.text
        proxy.stop()
        digest = hashlib.sha256(data).hexdigest()
        [blob] = [p for p in (cache / "uploads").rglob(digest) if p.is_file()]
        flip_a_byte(blob)

        proxy = start()
        got = httpx.get(f"{proxy.url}/ch/linux-64/{package.name}", timeout=30)
        assert got.status_code == 503
        assert "damaged" in got.json()["error"]
        assert upstream.count("GET", f"/linux-64/{package.name}") == 0
        assert blob.exists()  # kept for the admin to look at: it was the only copy


def test_a_second_config_with_another_upstream_cannot_take_over_a_running_proxys_cache(
    tmp_path: Path, start_proxy
) -> None:
    """Two configurations naming one cache.path, channel `ch` from different upstreams: the
    second start dropped the running proxy's cache of `ch` (a changed upstream is purged) and
    both then served whatever the other had cached under `ch`. It is refused instead, one
    line, and the running proxy keeps its cache."""
    first = Upstream(listed_channel(tmp_path / "one", {FILE: DATA})).start()
    other = Upstream(listed_channel(tmp_path / "two", {FILE: os.urandom(1000)})).start()
    cache = tmp_path / "cache"
    try:
        proxy = start_proxy({"ch": {"upstream": first.url}}, cache=cache)
        assert httpx.get(f"{proxy.url}/ch/{FILE}", timeout=30).status_code == 200
        config = write_config(tmp_path / "second.toml", cache, {"ch": {"upstream": other.url}})
        started = serve_once(config)
        assert started.returncode == 2
        [line] = started.stderr.strip().splitlines()
        assert "'cache.path'" in line and "'ch'" in line and "Traceback" not in line
        again = httpx.get(f"{proxy.url}/ch/{FILE}", timeout=30)
        assert again.headers.get("x-cache") == "HIT"
        assert hashlib.sha256(again.content).hexdigest() == DIGEST
        assert other.count("GET", f"/{FILE}") == 0
    finally:
        first.stop()
        other.stop()


def test_a_second_proxy_with_the_same_upstreams_may_share_the_cache(
    tmp_path: Path, start_proxy
) -> None:
    with one_cache(tmp_path, start_proxy, {FILE: DATA}) as (_, start):
        one = start()
        assert httpx.get(f"{one.url}/ch/{FILE}", timeout=30).status_code == 200
        two = start()
        assert httpx.get(f"{two.url}/ch/{FILE}", timeout=30).headers.get("x-cache") == "HIT"
