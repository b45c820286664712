"""Pure rules for an uploaded package: its file name, the members of its archives, the budget
for unpacking them, its info/index.json. No I/O (unpack.py streams the archive through these).

What a package may hold, for every member of a `.tar.bz2` and of both inner tarballs of a
`.conda` (all of them, not only those before info/index.json: a client extracts everything):
- a name inside the package: no absolute path, no drive letter, no `..` component;
- a regular file, a directory, a symlink or a hardlink; never a device, a fifo or a sparse file;
- a symlink whose target, followed through the package's other symlinks, stays inside it;
- a hardlink to a regular file stored earlier in the same tarball;
- no member under a symlinked directory, and each file name once.
The `.conda` zip (CEP-2 / conda-package-handling's format) is uncompressed and holds exactly
`metadata.json`, `info-<stem>.tar.zst` and `pkg-<stem>.tar.zst`.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest, PayloadTooLarge
from .record_fields import COMPUTED
from .records_check import check_claims, check_record
from .routing import PACKAGE_RE


class InvalidPackage(BadRequest):
    """The upload is not a package the proxy will serve; the message says why."""


class UnpackLimit(PayloadTooLarge):
    """Unpacking the archive would cost more than its budget allows."""


MAX_INDEX_JSON = 256 * 1024
MAX_METADATA_JSON = 64 * 1024
MAX_MEMBERS = 100_000  # conda-forge's largest packages hold a few tens of thousands of files
MAX_PATH = 4096
MIN_BUDGET = 256 * 1024**2
MAX_LINK_HOPS = 40  # as Linux's SYMLOOP_MAX
MAX_LINK_STEPS = 500_000  # path components followed over all symlinks of a package
_META_HEADERS = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}
_MAX_META_HEADER = 64 * 1024
_MEMBER_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "directory",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
}
_STEM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+!-]*$")


def check_filename(filename: str) -> tuple[str, str, str, str]:
    """(name, version, build, extension) of `<name>-<version>-<build>.conda|.tar.bz2`."""
    if (
        not filename
        or any(c in filename for c in "/\\\x00")
        or filename.startswith(".")
        or ".." in filename
    ):
        raise InvalidPackage(f"file name {filename!r} contains a path or forbidden characters")
    match = PACKAGE_RE.match(filename)
    if match is None:
        raise InvalidPackage(
            f"file name {filename!r} is not <name>-<version>-<build>.conda or .tar.bz2"
        )
    return match["name"], match["version"], match["build"], match["ext"]


# --- the budget -----------------------------------------------------------------------------


def unpack_budget(upload_size: int, max_unpacked_size: int, max_unpacked_ratio: int) -> int:
    """Bytes an upload may unpack to: `max_unpacked_ratio` times its size, at least 256 MiB,
    never more than `max_unpacked_size`."""
    return min(max_unpacked_size, max(max_unpacked_ratio * upload_size, MIN_BUDGET))


@dataclass
class Budget:
    """Decompressed bytes and members, counted twice: as tar headers declare them (refused
    before any of it is decompressed) and as they are actually produced."""

    limit: int
    max_members: int = MAX_MEMBERS
    declared: int = 0
    produced: int = 0
    members: int = 0

    def declare(self, member: str, size: int) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise UnpackLimit(
                f"the package has more than {self.max_members} archive members",
                member=member,
                max_members=self.max_members,
            )
        self.declared += size + tarfile.BLOCKSIZE
        if self.declared > self.limit:
            raise UnpackLimit(
                f"archive member {member!r} declares {size} bytes: the package would unpack to "
                f"more than its budget of {self.limit} bytes (uploads.max_unpacked_size, "
                f"uploads.max_unpacked_ratio)",
                member=member,
                limit=self.limit,
            )

    def produce(self, n: int) -> None:
        self.produced += n
        if self.produced > self.limit:
            raise UnpackLimit(
                f"the package decompresses to more than its budget of {self.limit} bytes "
                "(uploads.max_unpacked_size, uploads.max_unpacked_ratio)",
                limit=self.limit,
            )


def check_header(kind: bytes, size: int) -> None:
    """A tar extension header (pax, GNU long name) is read into memory whole: bound it before
    tarfile does."""
    if kind in _META_HEADERS and size > _MAX_META_HEADER:
        raise InvalidPackage(f"a tar extension header declares {size} bytes")
    if kind == tarfile.GNUTYPE_SPARSE:
        raise InvalidPackage("the archive holds a sparse file")


# --- member names and types -------------------------------------------------------------------


def check_member_name(member: str) -> str:
    """The member's path inside the package (`./` and empty components dropped); refuses any
    path that could land outside it on POSIX or Windows."""
    if "\x00" in member or len(member.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise InvalidPackage(f"archive member {member[:200]!r} has an invalid name")
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member):
        raise InvalidPackage(f"archive member {member!r} is an absolute path", member=member)
    parts = [p for p in re.split(r"[/\\]", member) if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPackage(f"archive member {member!r} escapes the package", member=member)
    return "/".join(parts)


def member_kind(member: tarfile.TarInfo) -> str:
    kind = _MEMBER_TYPES.get(member.type)
    if kind is None:
        what = {
            tarfile.CHRTYPE: "a character device",
            tarfile.BLKTYPE: "a block device",
            tarfile.FIFOTYPE: "a fifo",
        }.get(member.type, f"of tar type {member.type!r}")
        raise InvalidPackage(
            f"archive member {member.name!r} is {what}; a package holds files, directories "
            "and links",
            member=member.name,
        )
    return kind


@dataclass(frozen=True)
class ZipEntry:
    name: str
    stored: bool  # ZIP_STORED, not encrypted
    file_size: int
    compress_size: int


def check_conda_container(entries: list[ZipEntry]) -> str:
    """The stem `<s>` of a .conda's `info-<s>.tar.zst`; the zip must hold exactly that,
    `pkg-<s>.tar.zst` and `metadata.json`, each stored uncompressed once."""
    names = [e.name for e in entries]
    infos = [n for n in names if n.startswith("info-") and n.endswith(".tar.zst")]
    if not infos:
        raise InvalidPackage("the archive has no info-<name>.tar.zst member")
    stem = infos[0][len("info-") : -len(".tar.zst")]
    expected = {"metadata.json", f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"}
    if not _STEM.match(stem) or ".." in stem:
        raise InvalidPackage(f"the .conda member {infos[0]!r} has an unsafe name", member=infos[0])
    for name in names:
        if name not in expected:
            raise InvalidPackage(
                f"the .conda holds {name!r}; a .conda holds only metadata.json, "
                f"info-{stem}.tar.zst and pkg-{stem}.tar.zst",
                member=name,
            )
    if len(names) != len(expected) or set(names) != expected:
        missing = sorted(expected - set(names)) or sorted({n for n in names if names.count(n) > 1})
        raise InvalidPackage(
            f"the .conda must hold each of {', '.join(sorted(expected))} once ({missing[0]})",
            member=missing[0],
        )
    for entry in entries:
        if not entry.stored or entry.file_size != entry.compress_size:
            raise InvalidPackage(
                f"the .conda member {entry.name!r} is compressed or encrypted by the zip; a "
                ".conda's zip stores its members as they are",
                member=entry.name,
            )
    return stem


def check_conda_stem(stem: str, filename: str) -> None:
    """The inner tarballs are named after the file: conda (conda-package-streaming) looks for
    `info-<file name stem>.tar.zst` and cannot install a .conda whose members carry another
    stem, while rattler unpacks whatever `*.tar.zst` it meets: one file, two outcomes."""
    expected = filename.removesuffix(".conda")
    if stem != expected:
        raise InvalidPackage(
            f"the .conda holds info-{stem}.tar.zst and pkg-{stem}.tar.zst; for {filename!r} "
            f"conda looks for info-{expected}.tar.zst (rename the file, or rebuild it)",
            member=f"info-{stem}.tar.zst",
        )


# --- info/index.json --------------------------------------------------------------------------


def check_index(index: Any, filename: str) -> str:
    """Validate info/index.json (every field, see records_check, and what a new upload may
    claim, see record_claims) against the file name; return the package's subdir."""
    name, version, build, _ = check_filename(filename)
    check_record(index)
    check_claims(index)
    if (index["name"], index["version"], index["build"]) != (name, version, build):
        raise InvalidPackage(
            f"file name {filename!r} does not match info/index.json "
            f"({index['name']}-{index['version']}-{index['build']})"
        )
    return str(index["subdir"])


def make_record(index: dict[str, Any], md5: str, sha256: str, size: int) -> dict[str, Any]:
    """The repodata record: index.json plus what an indexer computes over the whole file."""
    kept = {k: v for k, v in index.items() if k not in COMPUTED}
    return {**kept, "md5": md5, "sha256": sha256, "size": size}
