"""A synthetic channel the size of conda-forge, for bench/scale.py.

`--records` linux-64 records (default 400,000, over records/16 names) and a quarter as many
noarch records, each looking like conda-forge's (name, version, build, build_number, depends,
constrains, license, md5, sha256, size, subdir, timestamp; ~720 bytes of indented JSON, so
400,000 records make a 280 MB repodata.json). Every subdir gets repodata.json, .zst, .bz2,
current_repodata.json (the latest version of each name) and a CEP-16 shard index with one shard
per name (zstd(msgpack), checksums as raw bytes, named by the sha256 of their bytes).

Dependencies form a graph a solver can walk: a few core libraries at the bottom (python and
its C libraries), every other name depending on core names and on ~0.8 earlier names on
average, with constraints every name satisfies. Solving five names pulls a closure of a few
dozen names, as on conda-forge.

A handful of real (small) packages, built with conda-package-handling, are records of the
channel too, so GETs of them can be verified by any cache. Records are a pure function of
(subdir, name index, records), so a change to one name rebuilds its shard alone.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import msgspec
import zstandard

from tests.support.channel import Pkg, build_package

# Core names, each depending only on names before it; from python on, python packages.
CORE = (
    *("libgcc-ng", "libstdcxx-ng", "libzlib", "ca-certificates", "openssl", "libffi", "xz"),
    *("bzip2", "ncurses", "readline", "libuuid", "libsqlite", "tk", "libnsl", "python"),
    *("setuptools", "wheel", "pip", "six", "packaging", "certifi", "idna", "urllib3"),
    *("charset-normalizer", "requests", "pyyaml", "numpy", "typing_extensions", "attrs"),
)
PYTHON = CORE.index("python")
PYTHONS = ("3.10.14", "3.11.9", "3.12.7", "3.13.1")
SYLLABLES = tuple(
    [
        "ab",
        "ar",
        "bel",
        "bo",
        "cal",
        "cor",
        "da",
        "del",
        "en",
        "fa",
        "gi",
        "ho",
        "in",
        "jo",
        "ka",
        "la",
        "lo",
        "ma",
        "mi",
        "na",
        "no",
        "or",
        "pa",
        "pi",
        "qu",
        "ra",
        "ri",
        "sa",
        "se",
        "ta",
        "ti",
        "to",
        "um",
        "va",
        "ve",
        "xa",
        "yo",
        "za",
        "ze",
        "zu",
    ]
)
PREFIXES = {
    "linux-64": ("lib", "", "r-", "perl-", "py", "ros-", "go-", "font-"),
    "noarch": ("pure-", "r-cran-", "types-", "sphinx-", "pytest-", "jupyter-", "mkdocs-", "nb-"),
}
LICENSES = (
    *(("MIT", "MIT"), ("BSD-3-Clause", "BSD"), ("Apache-2.0", "Apache")),
    *(("GPL-3.0-or-later", "GPL3"), ("LGPL-2.1-or-later", "LGPL"), ("MPL-2.0", "OTHER")),
)
CONSTRAINTS = ("", " >=1.0", " >=1.0.0", " >=1")  # lower bounds: the newest always fits
REAL = 110  # real small packages: one cold GET a round, 100 for the burst, one for the prober
CHANGED_PER_UPDATE = 50


@dataclass(frozen=True)
class Shape:
    records: int  # linux-64; noarch has a quarter of that

    def count(self, subdir: str) -> int:
        return self.records if subdir == "linux-64" else max(40, self.records // 4)

    def names(self, subdir: str) -> int:
        floor = len(CORE) + REAL + 20 if subdir == "linux-64" else 20
        return max(floor, self.count(subdir) // 16)


def name_of(subdir: str, i: int) -> str:
    if subdir == "linux-64" and i < len(CORE):
        return CORE[i]
    prefixes = PREFIXES[subdir]
    rest, k = divmod(i, len(prefixes))
    n = len(SYLLABLES)
    return prefixes[k] + SYLLABLES[rest % n] + SYLLABLES[rest // n % n] + SYLLABLES[rest // n**2]


def is_python(subdir: str, i: int) -> bool:
    return i > PYTHON if subdir == "linux-64" and i < len(CORE) else i % 3 == 0


def counts(shape: Shape, subdir: str) -> list[int]:
    """Records per name, summing to exactly shape.count(subdir): pairs of names trade a
    random amount, so some names have many versions and some one."""
    names, total = shape.names(subdir), shape.count(subdir)
    base, extra = divmod(total, names)
    out = [base + (i < extra) for i in range(names)]
    rng = random.Random(f"counts/{subdir}/{shape.records}")
    for i in range(0, names - 1, 2):
        d = rng.randint(0, max(0, min(out[i], out[i + 1]) - 1))
        out[i], out[i + 1] = out[i] + d, out[i + 1] - d
    return out


def name_deps(subdir: str, i: int, rng: random.Random) -> list[str]:
    """Dependencies shared by a name's records: core names below it, ~0.8 earlier names."""
    if subdir == "linux-64" and i < len(CORE):
        below = range(min(i, PYTHON))
        return [CORE[j] + rng.choice(CONSTRAINTS) for j in rng.sample(below, min(len(below), 3))]
    if subdir == "linux-64":
        deps = [CORE[j] for j in rng.sample(range(PYTHON), rng.randint(4, 9))]
        low = len(CORE)
    else:
        deps, low = [], 0
    while rng.random() < 0.45 and i > low:
        deps.append(name_of(subdir, rng.randrange(max(low, i - 3000), i)))
    return sorted({d + rng.choice(CONSTRAINTS) for d in deps})


def name_records(shape: Shape, subdir: str, i: int, count: int) -> Iterator[tuple[str, dict]]:
    """The `count` records of name `i`, oldest first: versions 1.0.0 upwards, each in a few
    builds (one per python for python packages)."""
    rng = random.Random(f"{subdir}/{i}/{shape.records}")
    name, py = name_of(subdir, i), is_python(subdir, i)
    deps = name_deps(subdir, i, rng)
    license_, family = rng.choice(LICENSES)
    per_version = 4 if py and subdir == "linux-64" else rng.choice((1, 1, 2, 3))
    constrains = sorted(
        {name_of(subdir, rng.randrange(i)) + " >=1.0" for _ in range(rng.randint(1, 3))}
        if i and rng.random() < 0.5
        else ()
    )
    stamp = 1_577_836_800_000 + rng.randrange(10**11)
    for k in range(count):
        v, b = divmod(k, per_version)
        version = PYTHONS[v % 4] if name == "python" else f"{1 + v // 10}.{v % 10}.{k % 3}"
        build_number = rng.randrange(3)
        depends = list(deps)
        if name == "python":
            build = f"h{rng.getrandbits(32):08x}_{build_number}_cpython"
        elif py and subdir == "linux-64":
            minor = 10 + b % 4
            build = f"py3{minor}h{rng.getrandbits(32):08x}_{build_number}"
            depends.append(f"python >=3.{minor},<3.{minor + 1}.0a0")
        elif py:
            build = f"pyhd8ed1ab_{build_number}"
            depends.append("python >=3.9")
        else:
            build = f"h{rng.getrandbits(32):08x}_{build_number}"
        ext = ".conda" if rng.random() < 0.6 else ".tar.bz2"
        record: dict[str, object] = {"build": build, "build_number": build_number}
        if constrains:
            record["constrains"] = constrains
        record |= {
            "depends": sorted(depends),
            "license": license_,
            "license_family": family,
            "md5": f"{rng.getrandbits(128):032x}",
            "name": name,
            "sha256": f"{rng.getrandbits(256):064x}",
            "size": rng.randrange(8_000, 40_000_000),
            "subdir": subdir,
            "timestamp": stamp + k * 86_400_000,
            "version": version,
        }
        if subdir == "noarch":
            record["noarch"] = "python" if py else "generic"
        yield f"{name}-{version}-{build}{ext}", record


def real_packages(work: Path, out: Path) -> dict[int, list[tuple[str, dict]]]:
    """Build the real packages (linux-64, version 0.0.1 of synthetic names, so no solve picks
    them) into `out`; their records, by name index."""
    found: dict[int, list[tuple[str, dict]]] = {}
    for k in range(REAL):
        i = len(CORE) + 1 + k
        pkg = Pkg(
            name_of("linux-64", i), "0.0.1", f"hreal{k}_0", "linux-64", (), ".conda", 2048 + 97 * k
        )
        path = build_package(pkg, work, out)
        data = path.read_bytes()
        record = {
            "build": pkg.build,
            "build_number": 0,
            "depends": [],
            "license": "BSD-3-Clause",
            "md5": hashlib.md5(data).hexdigest(),
            "name": pkg.name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "subdir": "linux-64",
            "timestamp": 1_700_000_000_000,
            "version": pkg.version,
        }
        found[i] = [(path.name, record)]
    return found


def shard(records: list[tuple[str, dict]]) -> bytes:
    """zstd(msgpack) of one name's shard, sha256/md5 as raw bytes (CEP-16)."""

    def raw(record: dict) -> dict:
        return record | {k: bytes.fromhex(str(record[k])) for k in ("sha256", "md5")}

    doc = {
        "packages": {fn: raw(r) for fn, r in records if fn.endswith(".tar.bz2")},
        "packages.conda": {fn: raw(r) for fn, r in records if fn.endswith(".conda")},
        "removed": [],
    }
    return zstandard.ZstdCompressor(level=9).compress(msgpack.packb(doc, use_bin_type=True))


def latest(records: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The records of a name's newest version (what current_repodata.json keeps)."""
    newest = records[-1][1]["version"]
    return [(fn, r) for fn, r in records if r["version"] == newest]


def repodata(subdir: str, records: Iterator[tuple[str, dict]]) -> bytes:
    """repodata.json with "packages.conda" last but for "removed" and the version, so that
    records can be spliced in right after its opening brace (see Channel.update)."""
    tarballs, condas = [], []
    encode = msgspec.json.encode
    for fn, record in records:
        (condas if fn.endswith(".conda") else tarballs).append(encode(fn) + b":" + encode(record))
    compact = b"".join(
        [
            b'{"info":{"subdir":' + encode(subdir) + b'},"packages":{',
            b",".join(tarballs),
            b'},"packages.conda":{',
            b",".join(condas),
            b'},"removed":[],"repodata_version":1}',
        ]
    )
    # Indented like conda-index writes it (json.dumps(indent=2)): what the bytes on the wire
    # of a real channel look like.
    return msgspec.json.format(compact, indent=2)


SPLICE = b'"packages.conda": {'
