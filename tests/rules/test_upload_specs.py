"""What a new upload's info/index.json may claim (record_claims via archive.check_index): a
lower-case name, a subdir conda or rattler knows and that agrees with `noarch` and `platform`,
and dependencies that are plain `name [version [build]]` specs. A channel-qualified dependency
(`evil::numpy`) in a private upload tells every solver of the merged repodata to fetch from
another channel; an upper-case name or an invented subdir means one thing to one client and
another (or nothing) to the next. Each is refused with the field named; typical conda-forge
metadata still passes; records already stored are not re-judged by these rules."""

from __future__ import annotations

from typing import Any

import pytest

from condaproxy.rules.archive import check_index
from condaproxy.rules.record_claims import KNOWN_SUBDIRS
from condaproxy.rules.records_check import InvalidRecord, check_record

BASE: dict[str, Any] = {
    "name": "tool",
    "version": "1.0",
    "build": "h0_0",
    "build_number": 0,
    "subdir": "linux-64",
    "depends": [],
}
FILE = "tool-1.0-h0_0.conda"


def refused(index: dict[str, Any], filename: str = FILE) -> InvalidRecord:
    with pytest.raises(InvalidRecord) as caught:
        check_index(index, filename)
    return caught.value


BAD_SPECS = {
    "channel": "evil::numpy",
    "channel-with-version": "conda-forge::numpy >=1.26",
    "channel-url": "https://evil.example/y::numpy",
    "channel-file-url": "file:///tmp/x::numpy",
    "channel-and-subdir": "conda-forge/linux-64::numpy",
    "channel-spaced": "evil :: numpy",
    "namespace": "evil:numpy",
    "subdir-path": "conda-forge/numpy",
    "bracket-channel": "numpy[channel=evil]",
    "bracket-channel-quoted": "numpy[version='>=1', channel='evil']",
    "bracket-url": "numpy[url=https://evil.example/numpy-1.0-0.conda]",
    "bracket-subdir": "numpy[subdir=linux-64]",
    "bracket-fn": "numpy[fn=numpy-1.0-0.conda]",
    "bracket-md5": "numpy[md5=" + "0" * 32 + "]",
    "bracket-sha256": "numpy[sha256=" + "0" * 64 + "]",
    "bracket-namespace": "numpy[namespace=python]",
    "bracket-unknown-key": "numpy[license=MIT]",
    "bracket-empty": "numpy[]",
    "bracket-empty-value": "numpy[version=]",
    "bracket-nested": "numpy[version=[1]]",
    "bracket-unbalanced": "numpy[version=1",
    "bracket-version-twice": "numpy >=1[version=2]",
    "upper-case-name": "NumPy >=1",
    "glob-name": "num* >=1",
    "comment": "numpy >=1 # pinned",
    "semicolon": "numpy >=1;evil",
    "pip-style-at": "numpy @ https://evil.example/numpy.whl",
    "fourth-word": "numpy 1.0 py_0 extra",
    "space-separated-bounds": "numpy >1 <2",
    "bad-build": "numpy 1.0 a=b",
    "empty": "",
    "blank": "   ",
    "non-string": 5,
    "null": None,
    "list": ["numpy"],
    "control-char": "numpy\x1b[31m >=1",
    "newline": "numpy\n>=1",
    "non-ascii": "nümpy",
    "absurd-length": "numpy " + "1" * 5000,
}
SPEC_FIELDS = {
    "depends": lambda spec: {"depends": [spec]},
    "constrains": lambda spec: {"constrains": ["python >=3.8", spec]},
    "run_exports": lambda spec: {"run_exports": {"weak": [spec]}},
    "extra_depends": lambda spec: {"extra_depends": {"gui": [spec]}},
}


@pytest.mark.parametrize("field", sorted(SPEC_FIELDS))
@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_dependency_that_is_not_a_plain_spec_is_refused(case: str, field: str) -> None:
    error = refused({**BASE, **SPEC_FIELDS[field](BAD_SPECS[case])})
    assert error.extra["field"] == field
    assert f"field '{field}'" in error.message


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("evil::numpy", "names a channel ('evil'::)"),
        ("https://x/y::numpy", "names a channel ('https://x/y'::)"),
        ("numpy[channel=evil]", "sets [channel=...]"),
        ("numpy[url=https://x/y.conda]", "sets [url=...]"),
        ("NumPy", "'NumPy' is not lower-case"),
    ],
)
def test_the_refusal_says_what_the_spec_claims(spec: str, says: str) -> None:
    error = refused({**BASE, "depends": ["python >=3.8", spec]})
    assert says in error.message and "entry 1" in error.message, error.message


UPPER_NAMES = ["NumPy", "Numpy", "NUMPY", "numPy", "Tool"]


@pytest.mark.parametrize("name", UPPER_NAMES)
def test_a_name_that_is_not_lower_case_is_refused(name: str) -> None:
    error = refused({**BASE, "name": name}, f"{name}-1.0-h0_0.conda")
    assert error.extra["field"] == "name"
    assert "not lower-case" in error.message and repr(name.lower()) in error.message


# \u0131, \u212a, \u017f: letters a case-insensitive [a-z] matches (dotless i, Kelvin, long s)
OTHER_NAMES = [
    "-tool",
    ".tool",
    "to+ol",
    "to ol",
    "tool\u0131",
    "tool\u212a",
    "tool\u017f",
    "x" * 200,
]


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_a_name_outside_condas_alphabet_is_refused(name: str) -> None:
    assert refused({**BASE, "name": name}, FILE).extra["field"] == "name"


BAD_SUBDIRS = [
    "linux-65",
    "Linux-64",
    "LINUX-64",
    "noarch ",
    " noarch",
    "linux_64",
    "linux64",
    "windows-64",
    "osx-128",
    "linux-64\n",
    "../x",
    "linux-64/../noarch",
    "noarch/",
]


@pytest.mark.parametrize("subdir", BAD_SUBDIRS)
def test_a_subdir_no_client_knows_is_refused(subdir: str) -> None:
    error = refused({**BASE, "subdir": subdir})
    assert error.extra["field"] == "subdir"
    assert "'subdir'" in error.message


@pytest.mark.parametrize("name", ["__glibc", "__cuda", "__osx", "__unix", "__archspec", "__x"])
def test_a_package_named_as_a_virtual_package_is_refused(name: str) -> None:
    """`__glibc 99` in a channel would satisfy `__glibc >=2.34` on a system whose glibc is
    older (or shadow what the system reports): solvers take `__` names from the client."""
    error = refused({**BASE, "name": name}, f"{name}-1.0-h0_0.conda")
    assert error.extra["field"] == "name" and "virtual package" in error.message


def test_a_dependency_on_a_virtual_package_is_accepted() -> None:
    check_index({**BASE, "depends": ["__glibc >=2.17", "__cuda", "__osx >=11.0"]}, FILE)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"package_type": "virtual_system"}, "package_type"),
        ({"package_type": "virtual_python_wheel"}, "package_type"),
        ({"package_type": "noarch_python"}, "package_type"),
        (
            {"package_type": "noarch_generic", "noarch": "python", "subdir": "noarch"},
            "package_type",
        ),
        ({"noarch": "python", "subdir": "linux-64"}, "subdir"),
        ({"noarch": "generic", "subdir": "win-64"}, "subdir"),
        ({"noarch": True, "subdir": "osx-arm64"}, "subdir"),
        ({"platform": "win", "subdir": "linux-64"}, "platform"),
        ({"platform": "linux", "subdir": "osx-arm64"}, "platform"),
    ],
)
def test_fields_that_contradict_the_subdir_are_refused(change: dict[str, Any], field: str) -> None:
    error = refused({**BASE, **change})
    assert error.extra["field"] == field, error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ["tool"]),
        ("version", ["1.0"]),
        ("build", ["h0_0"]),
        ("subdir", ["linux-64"]),
        ("depends", "python >=3.8"),
        ("constrains", {"python": ">=3.8"}),
        ("license", ["MIT"]),
        ("noarch", ["python"]),
        ("noarch", "Python"),
        ("run_exports", {"weak": "libfoo"}),
    ],
)
def test_a_list_or_object_where_a_string_is_expected_is_refused(field: str, value: Any) -> None:
    assert refused({**BASE, field: value}).extra["field"] == field


# Shaped after conda-forge's own index.json files: each must still be accepted.
REAL = [
    {
        "name": "numpy",
        "version": "1.26.4",
        "build": "py312heda63a1_0",
        "build_number": 0,
        "subdir": "linux-64",
        "platform": "linux",
        "arch": "x86_64",
        "license": "BSD-3-Clause",
        "depends": [
            "libblas >=3.9.0,<4.0a0",
            "libcblas >=3.9.0,<4.0a0",
            "libgcc-ng >=12",
            "liblapack >=3.9.0,<4.0a0",
            "libstdcxx-ng >=12",
            "python >=3.12,<3.13.0a0",
            "python_abi 3.12.* *_cp312",
        ],
        "constrains": ["numpy-base <0a0"],
        "timestamp": 1707225376825,
    },
    {
        "name": "requests",
        "version": "2.31.0",
        "build": "pyhd8ed1ab_0",
        "build_number": 0,
        "subdir": "noarch",
        "noarch": "python",
        "platform": None,
        "arch": None,
        "license": "Apache-2.0",
        "depends": [
            "certifi >=2017.4.17",
            "charset-normalizer >=2,<4",
            "idna >=2.5,<4",
            "python >=3.7",
            "urllib3 >=1.21.1,<3",
        ],
        "constrains": ["chardet >=3.0.2,<6"],
        "timestamp": 1684774241324,
    },
    {
        "name": "libzlib",
        "version": "1.3.1",
        "build": "h87427d6_1",
        "build_number": 1,
        "subdir": "osx-arm64",
        "platform": "osx",
        "arch": "arm64",
        "license": "Zlib",
        "license_family": "Other",
        "depends": ["__osx >=11.0"],
        "constrains": ["zlib 1.3.1 *_1"],
        "run_exports": {"weak": ["libzlib >=1.3.1,<2.0a0"]},
        "timestamp": 1716874218000,
    },
    {
        "name": "python",
        "version": "3.12.3",
        "build": "h2628c8c_0_cpython",
        "build_number": 0,
        "subdir": "win-64",
        "platform": "win",
        "arch": "x86_64",
        "license": "Python-2.0",
        "depends": [
            "bzip2 >=1.0.8,<2.0a0",
            "libffi >=3.4,<4.0a0",
            "openssl >=3.2.1,<4.0a0",
            "tk >=8.6.13,<8.7.0a0",
            "ucrt >=10.0.20348.0",
            "vc >=14.2,<15",
            "vc14_runtime >=14.29.30139",
        ],
        "constrains": ["python_abi 3.12.* *_cp312"],
        "timestamp": 1713205012592,
    },
    {
        "name": "pytorch",
        "version": "2.1.2",
        "build": "cuda120_py311h25b6552_301",
        "build_number": 301,
        "subdir": "linux-aarch64",
        "depends": [
            "__cuda",
            "__glibc >=2.17,<3.0.a0",
            "_openmp_mutex >=4.5",
            "cuda-version >=12.0,<13",
            "libblas * *mkl",
            "numpy >=1.23.5,<2.0a0",
            "python >=3.11,<3.12.0a0",
            "pypy3.9 7.3.*|7.4.*",
            "sleef >=3.5.1,<4.0a0",
            "typing_extensions",
            "backports.zoneinfo",
            "jpeg >=9e,<10a",
            "msys2-conda-epoch ==20160418",
            "setuptools=68.0=py311_0",
            "six==1.16.0=pyh6c4a22f_0",
            "python >=3.8|(>=2.7, <3)",
            "numpy[version='>=1.0,<2',build=py*]",
            'blas[build_number=">=3"]',
            "mkl 2023.*",
            "python 2.7*",
            "numpy >= 1.0",
        ],
        "constrains": ["pytorch-cpu <0.0a0", "pytorch-gpu 99999999"],
        "track_features": "",
        "timestamp": 1703000000000,
    },
]


@pytest.mark.parametrize("record", REAL, ids=[r["name"] for r in REAL])
def test_typical_conda_forge_metadata_is_accepted(record: dict[str, Any]) -> None:
    filename = f"{record['name']}-{record['version']}-{record['build']}.conda"
    assert check_index(record, filename) == record["subdir"]


@pytest.mark.parametrize(
    "change",
    [
        {"package_type": "noarch_python", "noarch": "python", "subdir": "noarch"},
        {"package_type": "noarch_generic", "noarch": "generic", "subdir": "noarch"},
        {"package_type": None},
        {"platform": None, "arch": None, "noarch": "python", "subdir": "noarch"},
        {"platform": "linux", "arch": "x86_64", "noarch": "python", "subdir": "noarch"},
        {"subdir": "noarch"},  # an old-style noarch package without the field
        {"noarch": False},
    ],
)
def test_fields_that_agree_with_the_subdir_are_accepted(change: dict[str, Any]) -> None:
    check_index({**BASE, **change}, FILE)


@pytest.mark.parametrize("subdir", sorted(KNOWN_SUBDIRS))
def test_every_known_platform_is_accepted(subdir: str) -> None:
    noarch = {"noarch": "generic"} if subdir == "noarch" else {}
    assert check_index({**BASE, "subdir": subdir, **noarch}, FILE) == subdir


@pytest.mark.parametrize(
    "change",
    [
        {"depends": ["conda-forge::numpy"]},
        {"name": "NumPy"},
        {"noarch": "python"},
        {"subdir": "linux-65"},
    ],
)
def test_records_already_stored_are_still_readable(change: dict[str, Any]) -> None:
    """A shared manifest re-checks stored records with check_record alone: uploads accepted
    before this rule stay served (and deletable) after an upgrade."""
    check_record({**BASE, **change})
