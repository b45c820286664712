"""The pure rules for an uploaded package's record (records_check): every field held to what
conda, mamba and rattler read, the error naming the field; whatever passes, JSON and msgpack
carry and rattler parses."""

from __future__ import annotations

import json
import subprocess
import sys

import msgpack
import msgspec
import pytest
import zstandard

from condaproxy.archive import make_record
from condaproxy.merge import shard_bytes
from condaproxy.records_check import InvalidRecord, check_record
from tests.support.processes import ROOT

INDEX = {
    "name": "tool",
    "version": "1.0",
    "build": "h0_0",
    "build_number": 0,
    "subdir": "linux-64",
    "depends": ["python >=3.10"],
}

NAN = float("nan")
BAD_FIELDS = [
    ("build_number", 2**70),
    ("build_number", 2**31),
    ("build_number", -1),
    ("build_number", True),
    ("build_number", 1.0),
    ("timestamp", 2**70),
    ("timestamp", 2**53),  # rattler: "timestamp out of range"
    ("timestamp", 253_402_300_000),  # seconds past 9999-12-30
    ("timestamp", -1),
    ("timestamp", NAN),
    ("timestamp", float("inf")),
    ("timestamp", 1.7e12),
    ("depends", None),
    ("depends", [1]),
    ("depends", ["numpy ==="]),
    ("depends", ["*"]),
    ("depends", ["numpy\n>=1"]),
    ("depends", ["numpy >=1"] * 2000),
    ("constrains", "python"),
    ("noarch", "foo"),
    ("noarch", 1),
    ("noarch", ""),
    ("track_features", 1),
    ("track_features", None),
    ("features", ["a"]),
    ("license", 1),
    ("license", "\ud800"),
    ("license_family", "x" * 10_000),
    ("platform", 1),
    ("arch", ["x86_64"]),
    ("python_site_packages_path", "/etc"),
    ("python_site_packages_path", "../../x"),
    ("run_exports", ["a"]),
    ("run_exports", {"weak": "a"}),
    ("run_exports", {"sideways": ["a"]}),
    ("legacy_bz2_md5", "x"),
    ("legacy_bz2_size", -1),
    ("purls", "x"),
    ("extra_depends", [1]),
    ("url", "http://evil.example/x.conda"),
    ("channel", "http://evil.example"),
    ("build_string", "other"),
    ("fn", "other-1.0-0.conda"),
    ("x_nested", [[[[[[1]]]]]]),
    ("x_huge", "x" * 20_000),
    ("x_bigint", 2**64),
    ("x_nan", NAN),
    ("x_surrogate", {"\udc00": 1}),
    ("bad key!", 1),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f for f, _ in BAD_FIELDS])
def test_a_field_clients_cannot_read_is_refused_by_name(field, value):
    with pytest.raises(InvalidRecord) as caught:
        check_record({**INDEX, field: value})
    assert caught.value.extra["field"] == field
    assert f"'{field}'" in caught.value.message


@pytest.mark.parametrize(
    ("stem", "field"),
    [("tool-1.-h0", "version"), ("tool-1.0*-h0", "version"), ("tool+x-1.0-h0", "name")],
)
def test_identity_fields_clients_cannot_parse(stem, field):
    name, version, build = stem.rsplit("-", 2)
    with pytest.raises(InvalidRecord, match=f"'{field}'"):
        check_record({**INDEX, "name": name, "version": version, "build": build})


def test_too_many_or_too_large_unknown_fields():
    many = {f"x{i}": i for i in range(100)}
    with pytest.raises(InvalidRecord, match="more than 64 fields"):
        check_record({**INDEX, **many})
    large = {f"x{i}": "y" * 1000 for i in range(20)}
    with pytest.raises(InvalidRecord, match="larger than"):
        check_record({**INDEX, **large})


GOOD_RECORDS = [
    {},
    {"build_number": 2**31 - 1},
    {"timestamp": 0},
    {"timestamp": 1_700_000_000},  # seconds, as old conda-build wrote
    {"timestamp": 32_503_680_000},
    {"timestamp": 253_402_300_800},
    {"timestamp": 32_503_680_000_000},
    {"noarch": "python", "subdir": "noarch"},
    {"noarch": "generic"},
    {"noarch": True},
    {"noarch": False},
    {"noarch": None},
    {"track_features": "a b,c"},
    {"track_features": ["a", "b"]},
    {"features": "mkl"},
    {"license": None, "license_family": None},
    {"license": "Apache-2.0 AND (MIT OR GPL-2.0-only)"},
    {"platform": "linux", "arch": "x86_64"},
    {"platform": None, "arch": None},
    {"python_site_packages_path": "lib/python3.13t/site-packages"},
    {"run_exports": {"weak": ["libfoo >=1.2,<2.0a0"], "strong": ["bar"]}},
    {"constrains": ["pypy3.9 7.3.*|7.4.*", "python_abi 3.12.* *_cp312"]},
    {"depends": ["__glibc >=2.17", "libgcc-ng >=12", "numpy[version='>=1.0']"]},
    {"legacy_bz2_md5": "0" * 32, "legacy_bz2_size": 10},
    {"purls": ["pkg:pypi/requests"]},
    {"extra_depends": {"cuda": ["cudatoolkit >=11"]}},
    {"x_custom": {"nested": [1, 2.5, "three", None, True]}},
]


def test_records_that_pass_encode_and_parse_in_rattler(tmp_path):
    """The invariant of records_check: whatever it accepts, JSON and msgpack carry and rattler
    parses (the whole repodata.json, as conda and a full rattler load would)."""
    packages = {}
    for i, change in enumerate(GOOD_RECORDS):
        record = make_record({**INDEX, **change, "build": f"h{i}"}, "0" * 32, "1" * 64, 10)
        check_record(record)
        msgspec.json.encode(record)
        filename = f"tool-1.0-h{i}.conda"
        msgpack.unpackb(zstandard.decompress(shard_bytes({filename: record})))
        packages[filename] = record
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps({"info": {"subdir": "linux-64"}, "packages.conda": packages}))
    code = (
        "import os, sys, rattler\n"
        f"rattler.RepoData.from_path({str(path)!r})\n"
        "sys.stdout.write('parsed'); sys.stdout.flush(); os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout == "parsed", done.stderr[-2000:]


def test_the_computed_fields_are_the_proxys():
    record = make_record({**INDEX, "md5": "nope", "sha256": 5, "size": -1}, "a" * 32, "b" * 64, 7)
    assert (record["md5"], record["sha256"], record["size"]) == ("a" * 32, "b" * 64, 7)
    check_record(record)
