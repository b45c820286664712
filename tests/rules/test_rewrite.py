import msgspec

from condaproxy.rules.records import find_record
from condaproxy.rules.rewrite import rewrite_repodata, rewrite_shard_index

REPODATA = {
    "info": {"subdir": "linux-64", "base_url": "https://cdn.example.org/pkgs/linux-64/"},
    "repodata_version": 2,
    "packages": {},
    "packages.conda": {
        "a-1-0.conda": {
            "name": "a",
            "version": "1",
            "build": "0",
            "build_number": 0,
            "sha256": "11" * 32,
            "size": 10,
            "info": "not the top-level info",
        },
    },
    "removed": ["old-1-0.tar.bz2"],
    "v3": {"whl": {}},
}


def test_repodata_without_base_url_passes_through_unchanged():
    data = msgspec.json.encode({"info": {"subdir": "noarch"}, "packages": {}})
    out, origins = rewrite_repodata(data, "http://up/ch/noarch/repodata.json")
    assert out is data
    assert origins.packages is None


def test_absolute_base_url_is_dropped_and_remembered():
    data = msgspec.json.encode(REPODATA)
    out, origins = rewrite_repodata(data, "https://up.example/ch/linux-64/repodata.json")
    doc = msgspec.json.decode(out)
    assert "base_url" not in doc["info"]
    assert doc["info"]["subdir"] == "linux-64"
    assert origins.packages == "https://cdn.example.org/pkgs/linux-64/"
    # Everything else, unknown keys included, is intact.
    assert {k: v for k, v in doc.items() if k != "info"} == {
        k: v for k, v in REPODATA.items() if k != "info"
    }


def test_relative_and_root_relative_base_urls_resolve_against_the_repodata_url():
    for base, expected in [
        ("../../mirror/linux-64", "https://up.example/mirror/linux-64/"),
        ("/pkgs/x", "https://up.example/pkgs/x/"),
    ]:
        doc = {**REPODATA, "info": {"subdir": "linux-64", "base_url": base}}
        _, origins = rewrite_repodata(
            msgspec.json.encode(doc), "https://up.example/ch/linux-64/repodata.json"
        )
        assert origins.packages == expected


def test_shard_index_base_urls_point_at_the_proxy():
    index = {
        "version": 1,
        "info": {
            "subdir": "noarch",
            "base_url": "https://files.example/",
            "shards_base_url": "https://shards.example/noarch/",
        },
        "shards": {"a": b"\x00" * 32},
    }
    out, origins = rewrite_shard_index(
        index, "https://prefix.example/ch/noarch/repodata_shards.msgpack.zst"
    )
    assert out["info"]["base_url"] == "./"
    assert out["info"]["shards_base_url"] == "./shards/"
    assert out["shards"] == index["shards"] and out["version"] == 1
    assert origins.packages == "https://files.example/"
    assert origins.shards == "https://shards.example/noarch/"


def test_shard_index_defaults_resolve_next_to_the_index():
    index = {
        "info": {"subdir": "noarch", "base_url": "", "shards_base_url": "./shards/"},
        "shards": {},
    }
    _, origins = rewrite_shard_index(index, "http://up/ch/noarch/repodata_shards.msgpack.zst")
    assert origins.packages == "http://up/ch/noarch/"
    assert origins.shards == "http://up/ch/noarch/shards/"


def test_find_record_finds_one_file_in_raw_bytes():
    data = msgspec.json.encode(REPODATA)
    record = find_record(data, "a-1-0.conda")
    assert record is not None and record["sha256"] == "11" * 32 and record["size"] == 10
    assert find_record(data, "old-1-0.tar.bz2") is None, "a name in 'removed' is not a record"
    assert find_record(data, "missing-1-0.conda") is None


def test_find_record_copes_with_braces_and_quotes_inside_strings():
    doc = {
        "packages": {
            "b-1-0.tar.bz2": {"name": "b", "license": 'weird {"} license', "md5": "ff" * 16}
        }
    }
    pretty = msgspec.json.format(msgspec.json.encode(doc), indent=2)
    record = find_record(pretty, "b-1-0.tar.bz2")
    assert record == doc["packages"]["b-1-0.tar.bz2"]
