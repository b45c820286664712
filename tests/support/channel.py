"""Build a real conda channel on disk, or split one across two hosts (CEP-15/16): packages
made with conda-package-handling, indexed with py-rattler's indexer (in a subprocess, see
rattler_client.py for why)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgpack
import msgspec
import zstandard
from conda_package_handling import api

from condaproxy.rules.codecs import zstd_decompress


@dataclass(frozen=True)
class Pkg:
    name: str
    version: str
    build: str
    subdir: str
    depends: tuple[str, ...] = ()
    ext: str = ".conda"
    payload_size: int = 64

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}{self.ext}"


# A small dependency graph across linux-64 and noarch, in both package formats.
DEFAULT_PACKAGES = (
    Pkg("libzlib", "1.3", "h0", "linux-64"),
    Pkg("libcore", "2.1", "h1", "linux-64", ("libzlib >=1.2",), ext=".tar.bz2"),
    Pkg("pyutil", "0.4", "pyh0", "noarch", ()),
    Pkg("datatool", "1.0", "h2", "linux-64", ("libcore >=2", "pyutil")),
    Pkg("datatool", "0.9", "h0", "linux-64", ("libcore >=2",)),
)


def build_package(pkg: Pkg, workdir: Path, channel: Path) -> Path:
    src = workdir / f"src-{pkg.name}-{pkg.version}-{pkg.build}"
    (src / "info").mkdir(parents=True, exist_ok=True)
    (src / "share" / pkg.name).mkdir(parents=True, exist_ok=True)
    payload = f"share/{pkg.name}/{pkg.version}.txt"
    (src / payload).write_bytes(os.urandom(pkg.payload_size))
    index = {
        "name": pkg.name,
        "version": pkg.version,
        "build": pkg.build,
        "build_number": 0,
        "depends": list(pkg.depends),
        "subdir": pkg.subdir,
        "license": "BSD-3-Clause",
        "timestamp": 1_700_000_000_000,
    }
    if pkg.subdir == "noarch":
        index["noarch"] = "generic"
    (src / "info" / "index.json").write_text(json.dumps(index))
    (src / "info" / "files").write_text(payload + "\n")
    out = channel / pkg.subdir
    out.mkdir(parents=True, exist_ok=True)
    api.create(str(src), None, pkg.filename, out_folder=str(out))
    return out / pkg.filename


def index_channel(channel: Path, shards: bool = True, zst: bool = True) -> None:
    for subdir in ("noarch", "linux-64"):
        (channel / subdir).mkdir(parents=True, exist_ok=True)
    code = (
        "import asyncio, os, sys\n"
        "from rattler.index import index_fs\n"
        f"asyncio.run(index_fs({str(channel)!r}, write_zst={zst}, write_shards={shards},"
        " force=True))\n"
        "sys.stdout.flush(); os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def build_channel(
    channel: Path, workdir: Path, packages: tuple[Pkg, ...] = DEFAULT_PACKAGES, shards: bool = True
) -> Path:
    for pkg in packages:
        build_package(pkg, workdir, channel)
    index_channel(channel, shards=shards)
    return channel


def split_channel(channel: Path, meta_dir: Path, cdn_dir: Path, cdn_url: str) -> None:
    shutil.copytree(channel, cdn_dir)
    for subdir in ("linux-64", "noarch"):
        (meta_dir / subdir).mkdir(parents=True)
        base = f"{cdn_url}/{subdir}/"
        doc = msgspec.json.decode((channel / subdir / "repodata.json").read_bytes())
        doc["info"]["base_url"] = base
        doc["repodata_version"] = 2
        data = msgspec.json.encode(doc)
        (meta_dir / subdir / "repodata.json").write_bytes(data)
        (meta_dir / subdir / "repodata.json.zst").write_bytes(zstandard.compress(data))
        raw = (channel / subdir / "repodata_shards.msgpack.zst").read_bytes()
        index = msgpack.unpackb(zstd_decompress(raw))
        index["info"]["base_url"] = base
        index["info"]["shards_base_url"] = f"{base}shards/"
        (meta_dir / subdir / "repodata_shards.msgpack.zst").write_bytes(
            zstandard.compress(msgpack.packb(index))
        )
