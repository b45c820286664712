"""Pure merge and shadowing rules."""

import hashlib

import msgpack
import msgspec
import zstandard

from condaproxy.rules.codecs import zstd_decompress
from condaproxy.rules.merge import (
    merge_repodata,
    merged_shard_index,
    shadowed_names,
    shard_bytes,
    shard_records,
)


def rec(name, version, build="0", **extra):
    return {"name": name, "version": version, "build": build, "build_number": 0, **extra}


UPSTREAM = {
    "info": {"subdir": "linux-64"},
    "packages": {
        "ours-9.0-0.tar.bz2": rec("ours", "9.0"),
        "zlib-1.3-0.tar.bz2": rec("zlib", "1.3"),
    },
    "packages.conda": {
        "ours-99.0-0.conda": rec("ours", "99.0"),
        "ours-extra-1.0-0.conda": rec("ours-extra", "1.0"),
        "numpy-2.0-0.conda": rec("numpy", "2.0"),
    },
    "removed": ["ours-0.1-0.conda"],
    "repodata_version": 1,
    "v3": {"whl": {}},
}
LOCAL = {
    "ours-1.0-0.conda": rec("ours", "1.0"),
    "numpy-2.0-0.conda": rec("numpy", "2.0", local=True),
}


def merged(allow=()):
    return msgspec.json.decode(
        merge_repodata(msgspec.json.encode(UPSTREAM), LOCAL, "linux-64", allow)
    )


def test_a_local_name_hides_every_upstream_record_of_that_name():
    doc = merged()
    assert sorted(doc["packages.conda"]) == [
        "numpy-2.0-0.conda",
        "ours-1.0-0.conda",
        "ours-extra-1.0-0.conda",  # a different name that merely starts the same way
    ]
    assert sorted(doc["packages"]) == ["zlib-1.3-0.tar.bz2"]


def test_a_local_file_replaces_the_upstream_file_of_the_same_name():
    assert merged()["packages.conda"]["numpy-2.0-0.conda"]["local"] is True


def test_allow_upstream_shows_both():
    doc = merged(allow=["ours"])
    assert {"ours-1.0-0.conda", "ours-99.0-0.conda"} <= set(doc["packages.conda"])
    assert "ours-9.0-0.tar.bz2" in doc["packages"]


def test_everything_else_is_kept():
    doc = merged()
    assert doc["info"] == UPSTREAM["info"]
    assert doc["removed"] == UPSTREAM["removed"]
    assert doc["v3"] == UPSTREAM["v3"]
    assert doc["repodata_version"] == 1


def test_local_only_channel_starts_from_empty_repodata():
    doc = msgspec.json.decode(merge_repodata(None, LOCAL, "noarch", ()))
    assert doc["info"] == {"subdir": "noarch"}
    assert set(doc["packages.conda"]) == set(LOCAL)
    assert doc["packages"] == {}


def test_missing_package_maps_are_created():
    upstream = msgspec.json.encode({"info": {"subdir": "noarch"}})
    doc = msgspec.json.decode(
        merge_repodata(upstream, {"a-1-0.tar.bz2": rec("a", "1")}, "noarch", ())
    )
    assert set(doc["packages"]) == {"a-1-0.tar.bz2"}


def test_shadowed_names_respect_allow_upstream():
    assert shadowed_names(LOCAL, ["NumPy"]) == {"ours"}


def test_shards_carry_binary_checksums_and_round_trip():
    sha = hashlib.sha256(b"x").hexdigest()
    records = {"ours-1.0-0.conda": rec("ours", "1.0", sha256=sha, md5="ab" * 16)}
    data = shard_bytes(records)
    shard = msgpack.unpackb(zstd_decompress(data))
    assert shard["packages.conda"]["ours-1.0-0.conda"]["sha256"] == bytes.fromhex(sha)
    assert shard_records(shard) == records


def test_merged_shard_index_points_local_names_at_their_shards():
    upstream = {
        "version": 1,
        "info": {"subdir": "noarch", "base_url": "./", "shards_base_url": "./shards/"},
        "shards": {"numpy": b"\x01" * 32, "ours": b"\x02" * 32},
    }
    local = {"ours": zstandard.compress(b"local shard")}
    index = merged_shard_index(upstream, local, "noarch")
    assert index["shards"]["ours"] == hashlib.sha256(local["ours"]).digest()
    assert index["shards"]["numpy"] == b"\x01" * 32
    assert index["info"]["shards_base_url"] == "./shards/"
