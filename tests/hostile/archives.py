"""Hand-made package archives, hostile on purpose: tar members, zip entries and zstd/bz2 streams
written byte by byte where conda-package-handling would refuse to help."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zstandard

STEM = "hostile-1.0-h0"


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    declared: int | None = None  # a size for the header other than len(data)


def index_json(stem: str = STEM, **fields: Any) -> dict[str, Any]:
    name, version, build = stem.rsplit("-", 2)
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "subdir": "linux-64",
        "depends": [],
        "license": "MIT",
        "timestamp": 1_700_000_000_000,
        **fields,
    }


def index_member(index: dict[str, Any] | bytes) -> Member:
    data = index if isinstance(index, bytes) else json.dumps(index).encode()
    return Member("info/index.json", data)


def header(member: Member) -> bytes:
    info = tarfile.TarInfo(member.name)
    info.type = member.type
    info.linkname = member.linkname
    info.size = member.declared if member.declared is not None else len(member.data)
    info.mode = 0o644
    if member.type != tarfile.REGTYPE and member.declared is None:
        info.size = 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


def tar_bytes(members: Iterable[Member], end: bytes = bytes(1024), trailing: bytes = b"") -> bytes:
    """A tar stream: each member's header and padded data, then `end` and `trailing`."""
    out = io.BytesIO()
    for member in members:
        out.write(header(member))
        if member.data:
            out.write(member.data)
            out.write(bytes(-len(member.data) % tarfile.BLOCKSIZE))
    out.write(end)
    out.write(trailing)
    return out.getvalue()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def zstd_stream(chunks: Iterator[bytes]) -> bytes:
    """zstd of a long stream (e.g. gigabytes of zeros) without holding it."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return out.getvalue()


def conda_bytes(
    info: bytes,
    pkg: bytes,
    stem: str = STEM,
    extra: Iterable[tuple[str, bytes]] = (),
    compression: int = zipfile.ZIP_STORED,
    names: tuple[str, str, str] | None = None,
) -> bytes:
    """A .conda zip from already-compressed info and pkg tarballs."""
    metadata, info_name, pkg_name = names or (
        "metadata.json",
        f"info-{stem}.tar.zst",
        f"pkg-{stem}.tar.zst",
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        z.writestr(metadata, json.dumps({"conda_pkg_format_version": 2}))
        z.writestr(info_name, info)
        z.writestr(pkg_name, pkg)
        for name, data in extra:
            z.writestr(name, data)
    return out.getvalue()


def conda(
    info_members: Iterable[Member] = (),
    pkg_members: Iterable[Member] = (),
    index: dict[str, Any] | bytes | None = None,
    stem: str = STEM,
) -> bytes:
    """A .conda whose info tarball starts with info/index.json."""
    info = [index_member(index if index is not None else index_json(stem)), *info_members]
    return conda_bytes(zstd(tar_bytes(info)), zstd(tar_bytes(pkg_members)), stem)


def tar_bz2(members: Iterable[Member] = (), index: dict[str, Any] | None = None) -> bytes:
    """A .tar.bz2 whose first member is info/index.json."""
    return bz2.compress(tar_bytes([index_member(index or index_json()), *members]))
