"""A CEP-16 shard is the upstream's msgpack, verified by its name (sha256) but of any shape: a
list, package maps that are strings or numbers, records that are not maps, file names that are
not strings. The proxy reads a shard to learn a package's sha256 and size before streaming it;
a shard it cannot read is the upstream's error, a 502 naming the shard, never a 500. The
package is not streamed unverified on the strength of such a shard.

Real processes: the test upstream (answering the index and the shard by hand) and
`condaproxy serve`."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import msgpack
import pytest
import zstandard

from tests.support.hostile import HostileSetup

pytestmark = pytest.mark.integration

PKG = "linux-64/small-1.0-0.conda"
FN = PKG.split("/")[1]
GOOD = {"name": "small", "version": "1.0", "build": "0", "build_number": 0, "depends": []}

SHAPES: dict[str, Any] = {
    "a list": [1, 2],
    "a string": "shard",
    "a number": 7,
    "packages.conda a list": {"packages.conda": [1, 2]},
    "packages.conda a string": {"packages.conda": "abc"},
    "packages a number": {"packages": 7, "packages.conda": {}},
    "packages true": {"packages": True},
    "record a number": {"packages.conda": {FN: 5}},
    "record a string": {"packages.conda": {FN: "ab"}},
    "record a list": {"packages.conda": {FN: [1, 2]}},
    "record a list of pairs": {"packages.conda": {FN: [["sha256", "00"]]}},
    "file name a number": {"packages.conda": {7: GOOD, FN: GOOD}},
    "file name bytes": {"packages.conda": {FN.encode(): GOOD}},
}


def zst(value: Any) -> bytes:
    return zstandard.ZstdCompressor().compress(msgpack.packb(value, use_bin_type=True))


class Setup(HostileSetup):
    def shard(self, shape: Any) -> str:
        """The upstream's shard index names one shard for `small`, of this shape."""
        shard = zst(shape)
        digest = hashlib.sha256(shard).digest()
        info = {"subdir": "linux-64", "base_url": "./", "shards_base_url": "./shards/"}
        index = {"version": 1, "info": info, "shards": {"small": digest}}
        self.upstream.override("/linux-64/repodata_shards.msgpack.zst", zst(index))
        path = f"/linux-64/shards/{digest.hex()}.msgpack.zst"
        self.upstream.override(path, shard)
        return path


setup = Setup.fixture("shards", {PKG: os.urandom(4096)})


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_shard_of_another_shape_is_a_502_naming_it(setup: Setup, shape: str) -> None:
    setup.fresh()
    shard_path = setup.shard(SHAPES[shape])
    r = setup.client.get(f"{setup.proxy.url}/ch/{PKG}")
    assert r.status_code == 502, r.text
    assert shard_path.rsplit("/", 1)[1] in r.json()["upstream"]
    assert setup.upstream.count("GET", f"/{PKG}") == 0, "streamed without a usable record"


def test_a_well_formed_shard_still_verifies_the_package(setup: Setup) -> None:
    setup.fresh()
    data = (setup.upstream.directory / PKG).read_bytes()
    record = {**GOOD, "sha256": hashlib.sha256(data).digest(), "size": len(data)}
    setup.shard({"packages": {}, "packages.conda": {FN: record}, "removed": []})
    r = setup.client.get(f"{setup.proxy.url}/ch/{PKG}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
