"""Hostile uploaders smuggling package content past the proxy's check inside the .conda zip.

The proxy reads a .conda as Python's zipfile does: the central directory at the end, then each
entry it lists. rattler (pixi, rattler-build, py-rattler) extracts a .conda as a stream, local
header after local header from byte 0, and unpacks every `*.tar.zst` it meets. So a tarball in
a local entry the central directory does not list is installed by rattler and never checked
by the proxy: any path, link or size the member rules refuse gets in. Each such zip must be
refused with the rest of the hostile uploads (upload_env.py: 400, JSON naming the problem,
nothing kept). The first test shows, with rattler's own extractor, that the attack is real."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from tests.hostile.archives import STEM, Member, index_json, index_member, tar_bytes, zstd
from tests.hostile.upload_env import env, refused, upload
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration
__all__ = ["env"]

SMUGGLED = "share/smuggled/never-checked.txt"
METADATA = json.dumps({"conda_pkg_format_version": 2}).encode()


def info() -> bytes:
    return zstd(tar_bytes([index_member(index_json())]))


def pkg(name: str = "share/good.txt") -> bytes:
    return zstd(tar_bytes([Member(name, b"payload\n")]))


def listed_three(z: zipfile.ZipFile) -> None:
    z.writestr("metadata.json", METADATA)
    z.writestr(f"info-{STEM}.tar.zst", info())
    z.writestr(f"pkg-{STEM}.tar.zst", pkg())


def unlisted_entry(at: str) -> bytes:
    """The three listed entries, plus a `pkg-*.tar.zst` local entry holding SMUGGLED that the
    central directory does not list: before them, between them or after them."""
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as z:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name, on purpose
        if at == "before":
            z.writestr(f"pkg-{STEM}.tar.zst", pkg(SMUGGLED))
            listed_three(z)
            z.filelist.pop(0)
        elif at == "between":
            z.writestr("metadata.json", METADATA)
            z.writestr(f"pkg-{STEM}.tar.zst", pkg(SMUGGLED))
            z.writestr(f"info-{STEM}.tar.zst", info())
            z.writestr(f"pkg-{STEM}.tar.zst", pkg())
            z.filelist.pop(1)
        else:
            listed_three(z)
            z.writestr(f"pkg-{STEM}.tar.zst", pkg(SMUGGLED))
            z.filelist.pop()
    return out.getvalue()


def local_header_patched(**fields: int) -> bytes:
    """A well-formed .conda whose pkg entry's local header says other sizes or flags than the
    central directory (streaming readers believe the local header)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        listed_three(z)
    data = bytearray(out.getvalue())
    at = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(f"pkg-{STEM}.tar.zst").header_offset
    offsets = {"flags": (6, "<H"), "compress_size": (18, "<L"), "file_size": (22, "<L")}
    for field, value in fields.items():
        offset, fmt = offsets[field]
        struct.pack_into(fmt, data, at + offset, value)
    return bytes(data)


EXTRACT = """
import os, sys
import rattler.package_streaming as streaming
streaming.extract(sys.argv[1], sys.argv[2])
print("\\n".join(sorted(os.path.relpath(os.path.join(r, f), sys.argv[2])
                        for r, _, fs in os.walk(sys.argv[2]) for f in fs)))
sys.stdout.flush()
os._exit(0)
"""


def test_rattler_installs_an_entry_the_central_directory_does_not_list(tmp_path: Path) -> None:
    """Why the rule exists: zipfile sees three clean entries, rattler unpacks the fourth."""
    path = tmp_path / f"{STEM}.conda"
    path.write_bytes(unlisted_entry("before"))
    assert sorted(zipfile.ZipFile(path).namelist()) == sorted(
        ["metadata.json", f"info-{STEM}.tar.zst", f"pkg-{STEM}.tar.zst"]
    )
    done = subprocess.run(
        [sys.executable, "-c", EXTRACT, str(path), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert SMUGGLED in done.stdout.split(), done.stdout


ATTACKS = {
    "unlisted-entry-before": lambda: unlisted_entry("before"),
    "unlisted-entry-between": lambda: unlisted_entry("between"),
    "unlisted-entry-after": lambda: unlisted_entry("after"),
    "local-sizes-shorter-than-listed": lambda: local_header_patched(compress_size=40, file_size=40),
    "data-descriptor-flag": lambda: local_header_patched(flags=0x8),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_conda_zip_is_exactly_the_entries_its_central_directory_lists(env, attack):
    error = refused(env, upload(env, f"{STEM}.conda", ATTACKS[attack]()), 400)
    assert "central directory" in error["error"], error


def test_a_conda_made_by_conda_package_handling_is_still_accepted(env, tmp_path: Path) -> None:
    """The rule refuses no ordinary package: the env fixture's own upload passed it, and so
    does a .conda whose local headers carry extra fields the directory does not."""
    from tests.hostile.upload_env import post

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("metadata.json", METADATA)
        for name, data in ((f"pkg-{STEM}.tar.zst", pkg()), (f"info-{STEM}.tar.zst", info())):
            entry = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            entry.extra = struct.pack("<HH4s", 0xCAFE, 4, b"abcd")  # an unknown extra field
            z.writestr(entry, data)
    answer = post(env.proxy, f"{STEM}.conda", out.getvalue())
    assert answer.status_code == 201, answer.text
    env.delete(f"linux-64/{STEM}.conda")
