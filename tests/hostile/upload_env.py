"""A proxy with a channel that already holds one accepted upload, shared by the hostile upload
tests of a module, and the check every refused upload must pass: the right status, a JSON error
naming what was wrong, nothing stored, no temp file left (in the cache or in $TMPDIR), one
warning, no traceback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.processes import Proxy, Upstream, write_config

WRITE = "ci-write-token-1"
LIMIT = 5 * 2**20  # uploads.max_upload_size


@dataclass
class Env:
    proxy: Proxy
    cache: Path
    tmpdir: Path  # the proxy's $TMPDIR

    def leftovers(self) -> list[Path]:
        """Everything an upload could leave behind: upload blobs, temp files, spooled parts."""
        places = (self.cache / "uploads" / "blobs", self.cache / "tmp", self.tmpdir)
        return sorted(p for d in places for p in d.rglob("*") if p.is_file())

    def listing(self) -> list[str]:
        r = httpx.get(f"{self.proxy.url}/api/channels/local/packages")
        return sorted(f"{p['subdir']}/{p['filename']}" for p in r.json()["packages"])

    def delete(self, path: str) -> None:
        url = f"{self.proxy.url}/api/channels/local/packages/{path}"
        httpx.delete(url, headers={"x-api-key": WRITE}).raise_for_status()

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.proxy.events() if e.get("level") in ("warning", "error")]


@pytest.fixture(scope="module")
def env(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("hostile-uploads")
    upstream = Upstream(channel_dir).start()
    tmpdir = base / "tmpdir"
    tmpdir.mkdir()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"local": {"upstream": upstream.url}},
        extra=f"[uploads]\nmax_upload_size = {LIMIT}\nread_timeout = 1\n",
        tokens={"ci": {"token": WRITE, "roles": {"local": "write"}}},
    )
    proxy = Proxy(config, env={"TMPDIR": str(tmpdir)}).start()
    # One accepted upload: linux-64 is served merged, the code path a bad record would break.
    good = build_package(Pkg("internal-tool", "1.0", "h0", "linux-64"), base / "w", base / "out")
    assert post(proxy, good.name, good.read_bytes()).status_code == 201
    yield Env(proxy, base / "cache", tmpdir)
    proxy.stop()
    upstream.stop()


def post(proxy: Proxy, filename: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/api/channels/local/upload/{filename}",
        content=data,
        params=params,
        headers={"x-api-key": WRITE},
        timeout=60,
    )


def refused(env: Env, act: Callable[[], tuple[int, bytes]], status: int, *says: str) -> dict:
    """Run `act` (an upload); check it was refused the way every refusal must be."""
    before_files, before_listing = env.leftovers(), env.listing()
    before_warnings = len(env.warnings())
    try:
        got, body = act()
        assert got == status, body[:1000]
        error = json.loads(body)
        assert error["status"] == status
        for text in says:
            assert text in error["error"], error
        assert env.leftovers() == before_files, "nothing stored, no temp file left"
        assert env.listing() == before_listing
        new = env.warnings()[before_warnings:]
        assert [e["event"] for e in new] == ["upload refused"], new
        assert new[0]["status"] == status
        assert "Traceback" not in env.proxy.log()
    finally:  # an upload wrongly accepted must not change what the next test sees
        for path in set(env.listing()) - set(before_listing):
            env.delete(path)
    return dict(error)


def upload(env: Env, filename: str, data: bytes) -> Callable[[], tuple[int, bytes]]:
    def act() -> tuple[int, bytes]:
        r = post(env.proxy, filename, data)
        return r.status_code, r.content

    return act
