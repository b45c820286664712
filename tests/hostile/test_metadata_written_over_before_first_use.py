"""Cached metadata written over in place after the proxy started but before this process (or
this worker) first served it. A file written since the start was taken for this server's own
write (its mtime is after the start) and served unhashed: the changed bytes went out under the
snapshot's sha256 and ETag. Only a file whose stamp the writer recorded is this server's.

Real processes: the test upstream and `condaproxy serve`, restarted over the same cache (the
file is then from before the start, and changed after it)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.hostile.test_cache_written_over_while_running import DAMAGE, DATA, METADATA
from tests.support.hostile import listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration


def get(proxy: Proxy, path: str) -> httpx.Response:
    headers = {"accept-encoding": "identity"}
    return httpx.get(f"{proxy.url}/ch/{path}", headers=headers, timeout=30)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_metadata_changed_before_its_first_use_is_never_served(tmp_path: Path, damage: str) -> None:
    hurt: Callable[[Path], None] = DAMAGE[damage]
    upstream = Upstream(listed_channel(tmp_path / "channel", DATA)).start()
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "proxy.toml", cache, {"ch": {"upstream": upstream.url}}, 600)
    try:
        first = Proxy(config).start()
        try:
            before = {path: get(first, path).content for path in METADATA}
        finally:
            first.stop()
        again = Proxy(config).start()
        try:
            files = sorted(p for p in (cache / "meta").rglob("*") if p.is_file())
            assert files
            for file in files:
                hurt(file)
                os.utime(file)  # whatever the damage kept, the change is after the start
            for path in METADATA:
                got = get(again, path)
                if got.status_code == 503:  # found damaged while it was served: dropped
                    assert "damaged" in got.json()["error"]
                    got = get(again, path)
                assert got.status_code == 200, (path, got.status_code, got.text[:200])
                assert got.content == before[path], path
        finally:
            again.stop()
        no_crash_in_log(again.log())
    finally:
        upstream.stop()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_metadata_changed_before_the_other_worker_served_it_is_never_served(
    tmp_path: Path, damage: str
) -> None:
    upstream = Upstream(listed_channel(tmp_path / "channel", DATA)).start()
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "proxy.toml", cache, {"ch": {"upstream": upstream.url}}, 600)
    proxy = Proxy(config, workers=2).start()
    try:
        path = METADATA[0]
        before = get(proxy, path).content  # one worker fetched and served it
        for file in sorted(p for p in (cache / "meta").rglob("*") if p.is_file()):
            DAMAGE[damage](file)
        for _ in range(8):  # whichever worker answers, the other one too
            got = get(proxy, path)
            if got.status_code == 503:
                assert "damaged" in got.json()["error"]
                continue
            assert got.status_code == 200, (got.status_code, got.text[:200])
            assert got.content == before
    finally:
        proxy.stop()
        upstream.stop()
    no_crash_in_log(proxy.log())
