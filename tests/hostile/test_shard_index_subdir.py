"""An upstream whose metadata says it is for another subdir than the one asked (a mirror that
mixed up its directories, a CDN serving one path's object for another). conda refuses
repodata whose `info.subdir` differs, and the proxy refused it for repodata; a CEP-16 shard
index saying the same went through, and clients of linux-64 were handed an osx-64 index. Both
are the upstream's error: repodata a 502 naming the upstream, the shard index a 404 (clients
fall back to repodata.json), and a good copy cached keeps being served.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
import zstandard

from tests.support.hostile import listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

TTL = 1
PKG = "linux-64/small-1.0-0.conda"
INDEX = "linux-64/repodata_shards.msgpack.zst"
OTHER = {"osx-64": "osx-64", "noarch": "noarch", "upper case": "LINUX-64", "a number": 5}
OTHER["a list"] = ["linux-64"]


def index(subdir: Any) -> bytes:
    info = {"subdir": subdir, "base_url": "./", "shards_base_url": "./shards/"}
    shards = {"small": hashlib.sha256(b"shard").digest()}
    document = {"version": 1, "info": info, "shards": shards}
    return zstandard.ZstdCompressor().compress(msgpack.packb(document, use_bin_type=True))


def repodata(subdir: Any) -> bytes:
    return json.dumps({"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}).encode()


class Setup:
    def __init__(self, upstream: Upstream, proxy: Proxy) -> None:
        self.upstream, self.proxy = upstream, proxy
        self.client = httpx.Client(timeout=30)

    def fresh(self) -> None:
        token = {"x-api-key": "admin-token-000001"}
        self.client.delete(f"{self.proxy.url}/api/cache", headers=token).raise_for_status()
        self.upstream.reset()
        self.upstream.override("/linux-64/repodata.json.zst", b"", 404)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(
            f"{self.proxy.url}/ch/{path}", headers={"accept-encoding": "identity"}
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("subdir")
    upstream = Upstream(listed_channel(base / "up", {PKG: os.urandom(1024)})).start()
    tokens = {"ops": {"token": "admin-token-000001", "roles": {"*": "admin"}}}
    channels = {"ch": {"upstream": upstream.url}}
    config = write_config(base / "proxy.toml", base / "cache", channels, TTL, tokens=tokens)
    proxy = Proxy(config).start()
    s = Setup(upstream, proxy)
    yield s
    s.client.close()
    proxy.stop()
    upstream.stop()
    no_crash_in_log(proxy.log())


@pytest.mark.parametrize("other", list(OTHER))
def test_a_shard_index_for_another_subdir_is_a_404_naming_it(setup: Setup, other: str) -> None:
    setup.fresh()
    setup.upstream.override(f"/{INDEX}", index(OTHER[other]))
    r = setup.get(INDEX)
    assert r.status_code == 404, r.content[:200]
    assert f"{setup.upstream.url}/{INDEX}" in r.json()["error"]
    assert "not 'linux-64'" in r.json()["error"]


@pytest.mark.parametrize("other", list(OTHER))
def test_a_shard_index_for_another_subdir_never_replaces_the_good_one(
    setup: Setup, other: str
) -> None:
    setup.fresh()
    setup.upstream.override(f"/{INDEX}", index("linux-64"))
    good = setup.get(INDEX)
    assert good.status_code == 200
    time.sleep(TTL + 0.1)
    setup.upstream.override(f"/{INDEX}", index(OTHER[other]))
    r = setup.get(INDEX)
    assert r.status_code == 200
    assert r.headers["x-cache"] == "STALE"
    assert r.content == good.content


@pytest.mark.parametrize("other", list(OTHER))
def test_repodata_for_another_subdir_is_a_502(setup: Setup, other: str) -> None:
    setup.fresh()
    setup.upstream.override("/linux-64/repodata.json", repodata(OTHER[other]))
    r = setup.get("linux-64/repodata.json")
    assert r.status_code == 502, r.content[:200]
    assert r.json()["upstream"] == f"{setup.upstream.url}/linux-64/repodata.json"


def test_an_index_that_names_its_own_subdir_or_none_is_served(setup: Setup) -> None:
    for subdir in ("linux-64", None):
        setup.fresh()
        setup.upstream.override(f"/{INDEX}", index(subdir))
        assert setup.get(INDEX).status_code == 200
