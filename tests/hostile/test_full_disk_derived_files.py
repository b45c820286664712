"""What the proxy derives from a snapshot (its JSON, `.bz2`, gzip) on a full disk.

A snapshot is stored as its `.zst` alone; the first package request of a subdir makes the
JSON on disk to look its record up. With the disk full that write failed and so did the
download (a 503), although the README promises that a full disk never fails one. The record
of a small snapshot is now read from the `.zst` in memory when the disk cannot take the JSON.
And each variant that could not be written left its half-written temp file in `tmp/` until
the next start, keeping the disk full; it is now removed as the write fails.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.hostile import fill, listed_channel, no_crash_in_log, tmpfs, wait_for
from tests.support.processes import Upstream

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/pkg-1.0-0.conda"
DATA = os.urandom(2 << 20)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "cache", "24m") as path:
        yield path


def test_a_package_whose_record_is_not_read_yet_is_served_on_a_full_disk(
    tmp_path: Path, start_proxy, small_disk: Path
) -> None:
    upstream = Upstream(listed_channel(tmp_path / "channel", {PACKAGE: DATA})).start()
    try:
        proxy = start_proxy(
            {"ch": {"upstream": upstream.url}}, cache=small_disk, extra="min_free = 1\n"
        )
        zst = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json.zst", timeout=30)
        assert zst.status_code == 200  # the snapshot, stored as its .zst alone
        filler = fill(small_disk)

        got = httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30)
        assert got.status_code == 200, got.text[:300]
        assert hashlib.sha256(got.content).digest() == hashlib.sha256(DATA).digest()
        wait_for(lambda: not list((small_disk / "tmp").iterdir()), 5, "temp files removed")

        filler.unlink()  # the disk recovers: the file is cached from then on
        again = httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30)
        assert hashlib.sha256(again.content).digest() == hashlib.sha256(DATA).digest()
        third = httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30)
        assert third.headers["x-cache"] == "HIT"
        no_crash_in_log(proxy.log())
    finally:
        upstream.stop()


def test_variants_that_do_not_fit_leave_nothing_and_are_made_once_the_disk_recovers(
    tmp_path: Path, start_proxy, small_disk: Path
) -> None:
    upstream = Upstream(listed_channel(tmp_path / "channel", {PACKAGE: DATA})).start()
    url = "linux-64/repodata.json"
    try:
        proxy = start_proxy(
            {"ch": {"upstream": upstream.url}}, cache=small_disk, extra="min_free = 1\n"
        )
        zst = httpx.get(f"{proxy.url}/ch/{url}.zst", timeout=30).content
        document = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(zst))
        filler = fill(small_disk)
        asks = {
            "bz2": (f"{url}.bz2", {}),
            "json": (url, {"accept-encoding": "identity"}),
            "gzip": (url, {"accept-encoding": "gzip"}),
        }
        for path, headers in asks.values():
            got = httpx.get(f"{proxy.url}/ch/{path}", headers=headers, timeout=30)
            assert got.status_code == 503, (path, got.status_code)
            assert "full" in got.json()["error"]
        wait_for(lambda: not list((small_disk / "tmp").iterdir()), 5, "no half-written file")

        filler.unlink()
        for name, (path, headers) in asks.items():
            with httpx.stream("GET", f"{proxy.url}/ch/{path}", headers=headers, timeout=30) as r:
                assert r.status_code == 200, (path, r.status_code)
                raw = b"".join(r.iter_raw())
            body = bz2.decompress(raw) if name == "bz2" else raw
            if r.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(raw)
            assert json.loads(body) == document, name
        no_crash_in_log(proxy.log())
    finally:
        upstream.stop()
