"""Streaming an uploaded archive through the rules of archive.py, within a budget; returns its
info/index.json. Runs in a worker thread; nothing is written to disk.

Every member of every tarball is read (a `.tar.bz2`, or both tarballs of a `.conda`), because a
client extracts them all. Before a member's bytes are decompressed, the size its header declares
is charged to the budget; the bytes actually decompressed are charged too, so neither a lying
header nor trailing data gets past it. A tarball must end with its end-of-archive zero blocks
and nothing but zeros after them: members hidden after a damaged header, which Python's tarfile
would silently stop before but other extractors might recover, are refused with the archive.
"""

from __future__ import annotations

import bz2
import collections
import json
import tarfile
import zipfile
from collections.abc import Callable
from typing import IO, Any, Self, cast

import zstandard

from ..rules.archive import (
    MAX_INDEX_JSON,
    MAX_METADATA_JSON,
    Budget,
    InvalidPackage,
    ZipEntry,
    check_conda_container,
    check_conda_stem,
    check_header,
)
from ..rules.errors import ProxyError
from ..rules.package_tree import PackageTree
from ..rules.zip_layout import LOCAL_HEADER, Listed, check_layout, entry_end, local_header_size

_BUFSIZE = 64 * 1024  # tarfile's read size: it copies its buffer's rest per header read
_INDEX = "info/index.json"


def read_package(
    path: str, filename: str, budget: Budget, check_index: Callable[[Any], object]
) -> Any:
    """Check every member of the archive at `path`; return its parsed info/index.json, which
    `check_index` has accepted as soon as it was read (before the payload is)."""
    scan = _Scan(PackageTree(), budget, check_index)
    try:
        with open(path, "rb") as f:
            if filename.endswith(".conda"):
                _read_conda(f, scan, filename)
            else:
                with bz2.BZ2File(f) as stream:
                    scan.tarball(stream, "the archive")
        scan.tree.finish()
    except ProxyError:  # a refusal already saying why
        raise
    except RecursionError:
        raise InvalidPackage("the archive nests too deeply to read") from None
    except Exception as exc:  # zipfile, tarfile, zstd, bz2 and EOF errors all mean the same here
        raise InvalidPackage(
            f"corrupt or truncated archive: {type(exc).__name__}: {exc}"[:300]
        ) from None
    if scan.index is None:
        raise InvalidPackage("the archive has no info/index.json")
    return scan.index


def parse_index_json(data: bytes) -> Any:
    """info/index.json as every reader reads it. A key twice in one object is refused: Python
    (and so this proxy's record) takes the last value, rattler refuses the file when it links
    the package (`duplicate field`), other parsers take the first, so no two tools would agree
    on what was uploaded."""
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InvalidPackage(f"info/index.json is not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise InvalidPackage("info/index.json nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # e.g. an integer of 5000 digits
        raise InvalidPackage(f"info/index.json is not valid JSON: {exc}"[:300]) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key not in found:
            found[key] = value
            continue
        shown = key if len(key) <= 64 else f"{key[:64]}..."
        raise InvalidPackage(
            f"info/index.json holds the key {shown!r} twice in one object (JSON readers "
            "disagree on which one counts; rattler refuses the package)",
            member=_INDEX,
            field=shown,
        )
    return found


def _read_conda(f: IO[bytes], scan: _Scan, filename: str) -> None:
    with zipfile.ZipFile(f) as z:
        stem = check_conda_container(
            [
                ZipEntry(
                    i.filename,
                    i.compress_type == zipfile.ZIP_STORED and not i.flag_bits & 0x1,
                    i.file_size,
                    i.compress_size,
                )
                for i in z.infolist()
            ]
        )
        _check_layout(f, z)
        metadata = z.getinfo("metadata.json")
        if metadata.file_size > MAX_METADATA_JSON:
            raise InvalidPackage(
                f"metadata.json declares {metadata.file_size} bytes", member="metadata.json"
            )
        z.read(metadata)  # its CRC is checked
        for part in (f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"):
            if part.startswith("pkg-"):
                if scan.index is None:
                    raise InvalidPackage(f"info-{stem}.tar.zst has no info/index.json")
                # After index.json: a renamed file is told that its name lies, first.
                check_conda_stem(stem, filename)
            with (
                z.open(part) as member,
                zstandard.ZstdDecompressor().stream_reader(
                    member, read_across_frames=True
                ) as stream,
            ):
                scan.tree.new_tarball()
                scan.tarball(stream, part)


def _check_layout(f: IO[bytes], z: zipfile.ZipFile) -> None:
    """Every byte before the central directory belongs to an entry it lists (zip_layout.py)."""
    ends = []
    for info in z.infolist():
        entry = Listed(
            info.filename,
            info.header_offset,
            info.compress_type,
            info.CRC,
            info.compress_size,
            info.file_size,
        )
        f.seek(entry.header_offset)
        fixed = f.read(LOCAL_HEADER.size)
        size = local_header_size(fixed, entry)
        ends.append((entry, entry_end(entry, fixed + f.read(size - len(fixed)))))
    check_layout(ends, cast(int, getattr(z, "start_dir")))  # noqa: B009 - not in typeshed


class _Header(tarfile.TarInfo):
    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        header = super().frombuf(buf, encoding, errors)
        check_header(header.type, header.size)
        return header


class _Counted:
    """The decompressed stream as tarfile reads it: every byte charged to the budget, the last
    few kept so the end of the archive can be checked."""

    def __init__(self, stream: IO[bytes], budget: Budget) -> None:
        self.stream = stream
        self.budget = budget
        self.total = 0
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n if n >= 0 else _BUFSIZE)
        if data:
            self.budget.produce(len(data))
            self.total += len(data)
            self._tail.append(data)
            self._tail_bytes += len(data)
            while self._tail_bytes - len(self._tail[0]) >= 2 * _BUFSIZE + 2 * tarfile.BLOCKSIZE:
                self._tail_bytes -= len(self._tail.popleft())
        return data

    def since(self, offset: int) -> bytes | None:
        """The bytes read from `offset` on, if still held."""
        start = self.total - self._tail_bytes
        if offset < start:
            return None
        return b"".join(self._tail)[offset - start :]


class _Scan:
    """One package's scan: its members so far, its budget, its index.json once read."""

    def __init__(
        self, tree: PackageTree, budget: Budget, check_index: Callable[[Any], object]
    ) -> None:
        self.tree = tree
        self.budget = budget
        self.check_index = check_index
        self.index: Any = None

    def tarball(self, stream: IO[bytes], where: str) -> None:
        """Check each member of one tarball, and index.json when it comes by."""
        counted = _Counted(stream, self.budget)
        with tarfile.open(
            fileobj=cast(IO[bytes], counted),  # tarfile only calls read()
            mode="r|",
            bufsize=_BUFSIZE,
            tarinfo=_Header,
        ) as tar:
            for member in tar:
                path, kind = self.tree.add(member)
                self.budget.declare(path or member.name, member.size if kind == "file" else 0)
                if path == _INDEX:
                    self.index = parse_index_json(_read_index(tar, member))
                    self.check_index(self.index)
            _check_end(counted, tar.offset, where)


def _read_index(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if not member.isfile() or member.size > MAX_INDEX_JSON:
        raise InvalidPackage(
            f"info/index.json is not a regular file of at most {MAX_INDEX_JSON} bytes",
            member=_INDEX,
        )
    extracted = tar.extractfile(member)
    if extracted is None:
        raise InvalidPackage("info/index.json cannot be read", member=_INDEX)
    data = extracted.read()
    if len(data) != member.size:
        raise InvalidPackage("info/index.json is truncated", member=_INDEX)
    return data


def _check_end(counted: _Counted, end: int, where: str) -> None:
    """tarfile stops at the first header it cannot use; the tarball is whole only if that was
    the end-of-archive marker (a zero block) and nothing but zero padding follows."""
    rest = counted.since(end)
    if rest is None or len(rest) < tarfile.BLOCKSIZE:
        raise InvalidPackage(f"corrupt or truncated archive: {where} ends inside a member")
    while rest:
        if rest.count(0) != len(rest):
            raise InvalidPackage(
                f"corrupt or truncated archive: {where} has data after a damaged or final "
                "header (members a client might still unpack)"
            )
        rest = counted.read(_BUFSIZE)
