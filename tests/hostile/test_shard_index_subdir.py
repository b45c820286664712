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
from typing import Any

import msgpack
import pytest
import zstandard

from tests.support.hostile import ZST
from tests.support.hostile import HostileSetup as Setup

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


setup = Setup.fixture("subdir", {PKG: os.urandom(1024)}, ttl=TTL, missing=ZST, identity=True)


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
