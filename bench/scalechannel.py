"""The synthetic conda-forge-sized channel on disk (records: bench/synth.py), and its changes.

`base/` is generated once per --records and kept (BENCH_DATA). Each run serves a copy of it,
`www/`, made of hard links; an update writes new files next to the old ones and renames them
into place (nginx's ETag, mtime-size, changes with them), so `base/` is never modified.

An update adds a new version to CHANGED_PER_UPDATE names: their shards are rebuilt, the shard
index rewritten, the new records spliced into repodata.json (no re-encoding of 280 MiB), and
.zst, .bz2 and current_repodata.json written again. Updates accumulate within a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import msgpack
import msgspec
import zstandard

from bench import synth

GENERATION = 1  # bump when the shape of the data changes: the cache key
SUBDIRS = ("linux-64", "noarch")
SHARD_INDEX = "repodata_shards.msgpack.zst"


def write(path: Path, data: bytes) -> None:
    """Atomically, with a fresh mtime (nginx's ETag is mtime-size)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def bz2_of(source: Path, target: Path) -> None:
    """bzip2 -9 of a file: lbzip2 on every core when installed, else python's bz2."""
    tmp = target.with_name(target.name + ".tmp")
    if shutil.which("lbzip2"):
        with open(source, "rb") as src, open(tmp, "wb") as out:
            subprocess.run(["lbzip2", "-9", "-c"], stdin=src, stdout=out, check=True)
    else:
        import bz2

        tmp.write_bytes(bz2.compress(source.read_bytes(), 9))
    os.replace(tmp, target)


def shard_index(subdir: str, shards: dict[str, bytes]) -> bytes:
    info = {"subdir": subdir, "base_url": "", "shards_base_url": "./shards/"}
    info["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc = {"version": 1, "info": info, "shards": shards}
    return zstandard.ZstdCompressor(level=3).compress(msgpack.packb(doc, use_bin_type=True))


def write_shard(directory: Path, records: list[tuple[str, dict]]) -> bytes:
    data = synth.shard(records)
    digest = hashlib.sha256(data).digest()
    path = directory / "shards" / f"{digest.hex()}.msgpack.zst"
    if not path.exists():
        write(path, data)
    return digest


def write_repodata(directory: Path, document: bytes, current: bytes) -> None:
    write(directory / "current_repodata.json", current)
    write(directory / "repodata.json", document)
    zst = zstandard.ZstdCompressor(level=3, threads=-1).compress(document)
    write(directory / "repodata.json.zst", zst)
    bz2_of(directory / "repodata.json", directory / "repodata.json.bz2")


class Channel:
    def __init__(self, data: Path, records: int, work: Path) -> None:
        self.shape = synth.Shape(records)
        self.root = data / f"scale-r{records}-g{GENERATION}"
        self.base, self.www = self.root / "base", work / "www"
        self.extra: dict[int, list[tuple[str, dict]]] = {}  # name index -> added records
        self.generation = 0
        self._state: tuple[bytes, dict[str, bytes], dict[str, list]] | None = None

    # building

    def ensure(self) -> None:
        if (self.root / ".complete").exists():
            return
        shutil.rmtree(self.root, ignore_errors=True)
        t0 = time.monotonic()
        print(f"generating {self.shape.records} records in {self.root} ...", flush=True)
        real = synth.real_packages(self.root / "build", self.base)
        shutil.rmtree(self.root / "build")
        (self.root / "real.json").write_text(json.dumps({str(k): v for k, v in real.items()}))
        for subdir in SUBDIRS:
            self._generate(subdir, real if subdir == "linux-64" else {})
        (self.root / ".complete").touch()
        print(f"generated in {time.monotonic() - t0:.0f} s", flush=True)

    def _generate(self, subdir: str, real: dict[int, list[tuple[str, dict]]]) -> None:
        directory = self.base / subdir
        (directory / "shards").mkdir(parents=True, exist_ok=True)
        shards: dict[str, bytes] = {}
        current: list[tuple[str, dict]] = []

        def records():
            for i, count in enumerate(synth.counts(self.shape, subdir)):
                found = real.get(i, []) + list(synth.name_records(self.shape, subdir, i, count))
                shards[synth.name_of(subdir, i)] = write_shard(directory, found)
                current.extend(synth.latest(found))
                yield from found

        document = synth.repodata(subdir, records())
        write_repodata(directory, document, synth.repodata(subdir, iter(current)))
        write(directory / SHARD_INDEX, shard_index(subdir, shards))

    # serving

    def reset(self) -> None:
        """www = base again (hard links), no updates applied."""
        shutil.rmtree(self.www, ignore_errors=True)
        self.www.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(self.base), str(self.www)], check=True)
        self.extra, self.generation, self._state = {}, 0, None

    def real(self) -> list[tuple[str, dict]]:
        """(file name, record) of every real package, in a fixed order."""
        found = json.loads((self.root / "real.json").read_text())
        return [tuple(r) for k in sorted(found, key=int) for r in found[k]]  # type: ignore[misc]

    def shard_names(self) -> dict[str, str]:
        """linux-64 name -> shard file name, as the upstream publishes them now."""
        raw = (self.www / "linux-64" / SHARD_INDEX).read_bytes()
        doc = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw), raw=False)
        return {name: f"{digest.hex()}.msgpack.zst" for name, digest in doc["shards"].items()}

    def solve_specs(self) -> list[str]:
        """Five linux-64 names spread over the channel (non-core)."""
        names = self.shape.names("linux-64")
        picks = [len(synth.CORE) + synth.REAL + 1 + k * (names // 6) + k for k in range(5)]
        return [synth.name_of("linux-64", min(i, names - 1)) for i in picks]

    # updating

    def update(self) -> list[str]:
        """The upstream changes (see the module docstring); returns the names changed."""
        subdir, directory = "linux-64", self.www / "linux-64"
        if self._state is None:
            document = (self.base / subdir / "repodata.json").read_bytes()
            raw = (self.base / subdir / SHARD_INDEX).read_bytes()
            index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw), raw=False)
            current = msgspec.json.decode(
                (self.base / subdir / "current_repodata.json").read_bytes()
            )
            by_name: dict[str, list] = {}
            for key in ("packages", "packages.conda"):
                for fn, record in current[key].items():
                    by_name.setdefault(record["name"], []).append((fn, record))
            self._state = (document, index["shards"], by_name)
        document, shards, current = self._state
        self.generation += 1
        g = self.generation
        rng = random.Random(f"update/{g}")
        lo, names = len(synth.CORE) + synth.REAL + 1, self.shape.names(subdir)
        changed = rng.sample(range(lo, names), min(synth.CHANGED_PER_UPDATE, names - lo))
        counts = synth.counts(self.shape, subdir)
        for i in changed:
            records = list(synth.name_records(self.shape, subdir, i, counts[i]))
            fn, last = records[-1]
            build = f"h{rng.getrandbits(32):08x}_0"
            new = last | {"version": f"9.{g}.0", "build": build, "build_number": 0}
            new |= {"sha256": f"{rng.getrandbits(256):064x}", "md5": f"{rng.getrandbits(128):032x}"}
            new["timestamp"] = int(time.time() * 1000)
            added = self.extra.setdefault(i, [])
            added.append((f"{last['name']}-9.{g}.0-{build}.conda", new))
            shards[last["name"]] = write_shard(directory, records + added)
            current[last["name"]] = [added[-1]]
        encode = msgspec.json.encode
        spliced = b"".join(
            encode(fn) + b":" + encode(r) + b"," for a in self.extra.values() for fn, r in a
        )
        at = document.index(synth.SPLICE) + len(synth.SPLICE)
        rows = iter([fr for group in current.values() for fr in group])
        write(directory / SHARD_INDEX, shard_index(subdir, shards))
        write_repodata(
            directory, document[:at] + spliced + document[at:], synth.repodata(subdir, rows)
        )
        return [synth.name_of(subdir, i) for i in changed]
