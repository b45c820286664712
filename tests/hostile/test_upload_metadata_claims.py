"""A hostile uploader writes claims into info/index.json that reach every client of the channel
through the merged repodata:

- a dependency naming a channel (`evil::numpy`, `https://x/y::numpy`, `numpy[channel=evil]`):
  every solver of the merged repodata is told to fetch `numpy` from the attacker's channel
  (dependency confusion written into metadata), or a URL, file name or checksum that pins
  which file a client fetches;
- a dependency text parsers read differently (`numpy >=1 # x`, a fourth word, `;`);
- an upper-case name beside a lower-case one (`NumPy` is `numpy` to rattler, not to others);
- a subdir no client knows (`linux-65`), or a `noarch` package filed under a platform;
- a name of a virtual package (`__glibc 99`, which would satisfy every `__glibc >=...`), or a
  `package_type` conda reads as not its to manage (`virtual_system`).

Each is refused as every invalid record is (upload_env.py: 400, JSON naming the field, nothing
kept, one warning), in both package formats; a package with typical conda-forge metadata is
still accepted and py-rattler installs it through the proxy. Real proxy process."""

from __future__ import annotations

import bz2
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.archives import STEM, conda, index_json, index_member, tar_bytes
from tests.hostile.upload_env import env, post, refused, upload
from tests.support.channel import Pkg, build_package
from tests.support.clients import rattler_install

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module

# case -> (index.json fields, the field the error must name, text the error must hold)
CLAIMS: dict[str, tuple[dict[str, Any], str, str]] = {
    "depends-on-another-channel": ({"depends": ["evil::numpy"]}, "depends", "names a channel"),
    "depends-on-a-channel-url": (
        {"depends": ["python >=3.8", "https://evil.example/c::numpy >=1"]},
        "depends",
        "names a channel",
    ),
    "depends-on-a-channel-subdir": (
        {"depends": ["conda-forge/linux-64::numpy"]},
        "depends",
        "names a channel",
    ),
    "constrains-to-another-channel": (
        {"constrains": ["conda-forge::openssl >=3"]},
        "constrains",
        "names a channel",
    ),
    "bracket-channel": ({"depends": ["numpy[channel=evil]"]}, "depends", "[channel=...]"),
    "bracket-url": (
        {"depends": ["numpy[url=https://evil.example/numpy-1.0-0.conda]"]},
        "depends",
        "[url=...]",
    ),
    "run-exports-channel": (
        {"run_exports": {"weak": ["evil::libfoo >=1"]}},
        "run_exports",
        "names a channel",
    ),
    "comment-in-a-spec": ({"depends": ["numpy >=1 # evil"]}, "depends", "'#'"),
    "fourth-word": ({"depends": ["numpy 1.0 py_0 evil"]}, "depends", "more than a name"),
    "upper-case-dependency": ({"depends": ["NumPy >=1"]}, "depends", "not lower-case"),
    "unknown-subdir": ({"subdir": "linux-65"}, "subdir", "not a platform"),
    "unknown-arch": ({"subdir": "osx-128"}, "subdir", "not a platform"),
    "noarch-filed-under-a-platform": (
        {"noarch": "python", "subdir": "linux-64"},
        "subdir",
        "noarch",
    ),
    "platform-not-the-subdirs": ({"platform": "win"}, "platform", "not the platform"),
    "a-virtual-package-type": (
        {"package_type": "virtual_system"},
        "package_type",
        "virtual_",
    ),
}


def _package(ext: str, index: dict[str, Any], stem: str = STEM) -> bytes:
    if ext == ".conda":
        return conda(index=index, stem=stem)
    return bz2.compress(tar_bytes([index_member(index)]))


@pytest.mark.parametrize("ext", [".conda", ".tar.bz2"])
@pytest.mark.parametrize("case", sorted(CLAIMS))
def test_an_upload_claiming_more_than_itself_is_refused(env, case: str, ext: str) -> None:
    fields, field, says = CLAIMS[case]
    data = _package(ext, index_json(STEM, **fields))
    error = refused(env, upload(env, f"{STEM}{ext}", data), 400, f"field '{field}'", says)
    assert error["field"] == field


@pytest.mark.parametrize("stem", ["Hostile-1.0-h0", "HOSTILE-1.0-h0", "hostilE-1.0-h0"])
def test_an_upload_named_other_than_in_lower_case_is_refused(env, stem: str) -> None:
    data = _package(".conda", index_json(stem), stem)
    error = refused(env, upload(env, f"{stem}.conda", data), 400, "not lower-case", "'hostile'")
    assert error["field"] == "name"


@pytest.mark.parametrize("stem", ["__glibc-99.0-0", "__cuda-99.0-0", "__osx-99.0-0"])
def test_an_upload_named_as_a_virtual_package_is_refused(env, stem: str) -> None:
    """`__glibc 99.0` in the channel would satisfy any `__glibc >=...` dependency whatever the
    client's system has."""
    data = _package(".conda", index_json(stem), stem)
    error = refused(env, upload(env, f"{stem}.conda", data), 400, "virtual package")
    assert error["field"] == "name"


CONDA_FORGE_LIKE = Pkg(
    "internal-app",
    "2.0.1",
    "py312h1a2b3c4_0",
    "linux-64",
    (
        "libcore >=2.1,<3.0a0",
        "libzlib >=1.2 h*",
        "pyutil",
        "datatool[version='>=1.0',build=h*]",
    ),
)


@pytest.mark.e2e
@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
def test_typical_metadata_is_still_accepted_and_installs(env, tmp_path: Path, sharded) -> None:
    built = build_package(CONDA_FORGE_LIKE, tmp_path / "work", tmp_path / "out")
    got = post(env.proxy, built.name, built.read_bytes())
    try:
        assert got.status_code == 201, got.text
        installed = rattler_install(f"{env.proxy.url}/local", tmp_path, sharded, "internal-app")
        assert installed["ok"], installed.get("error")
        names = {r["name"]: r["version"] for r in installed["records"]}
        assert names["internal-app"] == "2.0.1"
        assert names["datatool"] == "1.0" and {"libcore", "libzlib", "pyutil"} <= set(names)
    finally:
        if got.status_code == 201:
            env.delete(f"linux-64/{built.name}")
