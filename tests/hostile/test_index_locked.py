"""An index another process holds locked (a backup, an `sqlite3` shell, a stuck worker).

diskcache waits up to a minute for SQLite's lock, then raises `diskcache.Timeout`. That reached
the client as a 500 with a traceback in the log (seen against a real `condaproxy serve` with a
`BEGIN EXCLUSIVE` held 75 s). A locked index is now a failure of the local disk like a full
one: metadata with a copy is served stale, without one it is a 503 saying what failed, packages
still stream, and everything is stored again once the lock goes. The wait itself is real
SQLite's; here the index's writes raise what diskcache raises once it gives up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest
import respx
import zstandard
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, record, repodata, services_of

UP = "https://up.example/ch"
FILE = "pkg-1.0-0.conda"
DATA = b"p" * 300_000


class Lock:
    """While `held`, every write the proxy makes to its index times out."""

    def __init__(self, db: Any) -> None:
        self.held = False
        for name in ("set", "delete", "incr", "transact"):
            original = getattr(db, name)
            setattr(db, name, self._guard(original))

    def _guard(self, original: Any) -> Any:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.held:
                raise diskcache.Timeout("database is locked")
            return original(*args, **kwargs)

        return guarded


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        for subdir in ("linux-64", "osx-64"):
            files = {FILE: DATA} if subdir == "linux-64" else {}
            body = repodata(subdir, {fn: record(fn, d) for fn, d in files.items()})
            mocked.get(f"{UP}/{subdir}/repodata.json.zst").respond(
                200, content=zstandard.compress(body)
            )
            mocked.get(f"{UP}/{subdir}/repodata_shards.msgpack.zst").respond(404)
        mocked.get(f"{UP}/linux-64/{FILE}").respond(200, content=DATA)
        yield mocked


def test_a_locked_index_is_a_503_or_a_stale_answer_never_a_500(
    tmp_path: Path, router: respx.MockRouter
) -> None:
    clock = Clock()
    settings = make_settings(tmp_path / "cache", [ChannelSettings("ch", UP)], repodata_ttl=60)
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        assert client.get("/ch/linux-64/repodata.json").status_code == 200
        lock = Lock(services_of(client.app).index._db)
        lock.held = True
        clock.now += 120  # the snapshot is due for revalidation: it cannot be written

        stale = client.get("/ch/linux-64/repodata.json")
        assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
        package = client.get(f"/ch/linux-64/{FILE}")
        assert package.status_code == 200
        assert hashlib.sha256(package.content).digest() == hashlib.sha256(DATA).digest()
        fresh = client.get("/ch/osx-64/repodata.json")  # nothing cached to fall back on
        assert fresh.status_code == 503, fresh.text
        assert "locked" in fresh.json()["error"] or "disk" in fresh.json()["error"]

        lock.held = False  # the lock goes: the proxy stores again, by itself
        assert client.get("/ch/osx-64/repodata.json").status_code == 200
        assert client.get("/ch/osx-64/repodata.json").headers["x-cache"] == "HIT"
        assert client.get("/ch/linux-64/repodata.json").headers["x-cache"] != "STALE"
