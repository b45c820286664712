"""An index that is no database any more does not keep the proxy from starting.

The index (`cache/index/cache.db`, SQLite) only points at what the cache holds. Cut short by a
crash or a careless copy, or overwritten with garbage, it made `condaproxy serve` exit at
start-up with a traceback: a cache that could be fetched again took the whole proxy down. It is
now set aside (renamed, for a look later), a fresh one started and the event logged; every
client gets the right bytes, fetched again where the old index pointed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import one_cache, serve_once
from tests.support.processes import write_config

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/pkg-1.0-0.conda"
DATA = os.urandom(1 << 20)


def garbage(db: Path) -> None:
    db.write_bytes(os.urandom(16384))


def cut_short(db: Path) -> None:
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)


def header_zeroed(db: Path) -> None:
    with db.open("r+b") as f:
        f.write(bytes(100))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage": garbage,
    "cut short": cut_short,
    "header zeroed": header_zeroed,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_index_is_set_aside_and_the_proxy_serves(
    tmp_path: Path, start_proxy, damage: str
) -> None:
    cache = tmp_path / "cache"
    with one_cache(tmp_path, start_proxy, {PACKAGE: DATA}) as (upstream, start):
        proxy = start()
        before = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30).content
        assert httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30).status_code == 200
        proxy.stop()
        for stale in ("cache.db-wal", "cache.db-shm"):
            (cache / "index" / stale).unlink(missing_ok=True)
        DAMAGE[damage](cache / "index" / "cache.db")

        proxy = start()
        for _ in range(2):
            got = httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(DATA).digest()
            meta = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30)
            assert (meta.status_code, meta.content) == (200, before)
        assert upstream.count("GET", f"/{PACKAGE}") == 2  # pointed at by nothing: fetched again
        [aside] = [p for p in cache.iterdir() if p.name.startswith("index.damaged-")]
        assert (aside / "cache.db").exists()  # kept for a look, not deleted
        [event] = proxy.events_where(lambda e: e.get("event", "").startswith("index damaged"))
        assert event["level"] == "error"
        assert "Traceback" not in proxy.log()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_upload_index_stops_serve_with_one_line(
    tmp_path: Path, start_proxy, damage: str
) -> None:
    """The upload index is the only record of the uploads: it is never set aside (the
    upstream's files of the uploaded names would come through). `serve` refuses it with one
    line saying what to do, where it gave a traceback from the lifespan."""
    cache = tmp_path / "cache"
    with one_cache(tmp_path, start_proxy, {PACKAGE: DATA}) as (upstream, start):
        proxy = start()
        assert httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30).status_code == 200
        proxy.stop()
        db = cache / "uploads" / "index" / "cache.db"
        for stale in ("cache.db-wal", "cache.db-shm"):
            (db.parent / stale).unlink(missing_ok=True)
        DAMAGE[damage](db)
        config = write_config(tmp_path / "again.toml", cache, {"ch": {"upstream": upstream.url}})
        started = serve_once(config)
        assert started.returncode == 2
        [line] = started.stderr.strip().splitlines()
        assert "upload index" in line and "damaged" in line and "Traceback" not in line
        assert db.exists()  # left as it was, for a restore
