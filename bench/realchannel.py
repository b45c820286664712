"""A real channel for install benchmarks: packages built with conda-package-handling, indexed by
py-rattler's `index_fs` (repodata.json, .zst and CEP-16 shards), cached on disk between runs.

Shape: `n` package names over linux-64 and noarch, in both formats, with payloads of random
(incompressible) bytes between 20 KiB and 4 MiB (log-uniform, so most are small and a few are
big, as in a real environment), each name in an old small version and a current one. Each name
depends on one to three earlier names; every name but the last four is a dependency of a later
one, so solving the last four names (`SPECS`) installs all `n` (the current versions). Three
extra files serve single-file rows: 1 MiB, 64 MiB and 1 GiB packages, listed in the repodata
like any other (so a proxy treats them as real, verified misses).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

from conda_package_handling import api

from bench.procs import MiB
from tests.support.channel import Pkg, build_package, index_channel

GENERATION = 1  # bump when the shape changes: the cache key
KiB = 1 << 10
BIG_FILES = {"hit1m": MiB, "cold64m": 64 * MiB, "huge1g": 1024 * MiB}


def specs(n: int) -> list[str]:
    return [name_of(i) for i in range(n - 4, n)]


def name_of(i: int) -> str:
    stems = ("lib", "py", "tool", "core", "data", "net", "img", "sci", "ui", "ml")
    return f"{stems[i % len(stems)]}{chr(97 + (i * 7) % 26)}{i:03d}"


def plan(n: int) -> list[Pkg]:
    """The packages of an `n`-name channel (deterministic)."""
    if n < 8:
        raise ValueError("--packages must be at least 8")
    rng = random.Random(f"peers-{n}")
    noarch = [i >= 2 and i < n - 4 and rng.random() < 0.25 for i in range(n)]
    deps: list[set[int]] = [set() for _ in range(n)]
    for i in range(1, n):
        # noarch depends on noarch only; a linux-64 package on anything earlier.
        pool = [j for j in range(i) if noarch[j] or not noarch[i]]
        for j in rng.sample(pool, min(len(pool), rng.randint(1, 3))):
            deps[i].add(j)
    depended = {j for d in deps for j in d}
    for j in range(n - 4):
        if j not in depended:
            later = [i for i in range(j + 1, n) if noarch[j] or not noarch[i]]
            deps[rng.choice(later)].add(j)
    packages = []
    for i in range(n):
        subdir = "noarch" if noarch[i] else "linux-64"
        size = int(math.exp(rng.uniform(math.log(20 * KiB), math.log(4 * MiB))))
        # .tar.bz2 only for small payloads: bzip2 of random bytes is slow both ways.
        ext = ".tar.bz2" if size < 256 * KiB and rng.random() < 0.3 else ".conda"
        depends = tuple(sorted(f"{name_of(j)} >=2" for j in deps[i]))
        build = f"h{i:04x}_0" if subdir == "linux-64" else "pyh0_0"
        packages.append(Pkg(name_of(i), "2.0", build, subdir, depends, ext, size))
        old = tuple(sorted(f"{name_of(j)} >=1" for j in deps[i]))
        packages.append(Pkg(name_of(i), "1.0", build, subdir, old, ".conda", 8 * KiB))
    for name, size in BIG_FILES.items():
        packages.append(Pkg(name, "1.0", "h0_0", "linux-64", (), ".conda", size))
    return packages


def channel(data: Path, n: int) -> Path:
    """The channel directory for `n` names, built once and kept under `data`."""
    root = data / f"peers-n{n}-g{GENERATION}"
    done = root / ".complete"
    if done.exists():
        return root / "channel"
    shutil.rmtree(root, ignore_errors=True)
    work, out = root / "build", root / "channel"
    packages = plan(n)
    print(f"building the peers channel ({len(packages)} packages) in {root} ...", flush=True)
    for pkg in packages:
        if pkg.name in BIG_FILES:
            build_big(pkg, work, out)
        else:
            build_package(pkg, work, out)
        shutil.rmtree(work)
    index_channel(out, shards=True, zst=True)
    done.touch()
    return out


def build_big(pkg: Pkg, work: Path, out: Path) -> None:
    """A package with one big random payload, zstd level 1 (cph's default, 19, takes minutes
    a GiB and buys nothing on random bytes)."""
    src = work / pkg.name
    (src / "info").mkdir(parents=True)
    with open(src / "payload.bin", "wb") as f:
        for _ in range(pkg.payload_size // MiB):
            f.write(random.randbytes(MiB))
    index = {"name": pkg.name, "version": pkg.version, "build": pkg.build, "build_number": 0}
    index |= {"depends": [], "subdir": pkg.subdir, "timestamp": 1_700_000_000_000}
    (src / "info" / "index.json").write_text(json.dumps(index))
    (src / "info" / "files").write_text("payload.bin\n")
    (out / pkg.subdir).mkdir(parents=True, exist_ok=True)
    api.create(str(src), None, pkg.filename, out_folder=str(out / pkg.subdir), compression_level=1)


def published(channel: Path, filename: str) -> tuple[str, int]:
    """The sha256 and size the channel's linux-64 repodata publishes for `filename`."""
    record = json.loads((channel / "linux-64" / "repodata.json").read_bytes())["packages.conda"]
    return str(record[filename]["sha256"]), int(record[filename]["size"])


def package_url(base: str, filename: str) -> str:
    return f"{base}/linux-64/{filename}"


def big_file(name: str) -> str:
    return f"{name}-1.0-h0_0.conda"
