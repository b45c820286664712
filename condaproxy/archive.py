"""Reading and checking an uploaded package: its name, its archive, its info/index.json.

conda-package-streaming reads `info/index.json` out of both formats without unpacking the
payload (a .conda's info part is a separate member; a .tar.bz2 is read only up to it). The
checks are pure functions; only `read_index_json` touches the file.
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from typing import Any, BinaryIO

from conda_package_streaming import package_streaming

from .errors import BadRequest
from .routing import PACKAGE_RE, SUBDIR_RE


class InvalidPackage(BadRequest):
    """The upload is not a package the proxy will serve; the message says why."""


_MAX_INDEX_JSON = 1 << 20
_TEXT_FIELDS = ("name", "version", "build")


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


def check_member_name(member: str) -> None:
    normalized = posixpath.normpath(member)
    if member.startswith(("/", "\\")) or normalized.startswith("..") or "\x00" in member:
        raise InvalidPackage(f"archive member {member!r} escapes the package")


def check_index(index: Any, filename: str) -> str:
    """Validate info/index.json against the file name; return the package's subdir."""
    name, version, build, _ = check_filename(filename)
    if not isinstance(index, dict):
        raise InvalidPackage("info/index.json is not a JSON object")
    for field in (*_TEXT_FIELDS, "subdir"):
        value = index.get(field)
        if not isinstance(value, str) or not value:
            raise InvalidPackage(f"info/index.json has no valid '{field}'")
        if any(c in value for c in "/\\\x00") or value in {".", ".."}:
            raise InvalidPackage(f"info/index.json '{field}' {value!r} contains a path")
    if not isinstance(index.get("build_number"), int) or isinstance(
        index.get("build_number"), bool
    ):
        raise InvalidPackage("info/index.json has no integer 'build_number'")
    if (index["name"], index["version"], index["build"]) != (name, version, build):
        raise InvalidPackage(
            f"file name {filename!r} does not match info/index.json "
            f"({index['name']}-{index['version']}-{index['build']})"
        )
    if not SUBDIR_RE.match(index["subdir"]):
        raise InvalidPackage(f"info/index.json subdir {index['subdir']!r} is not a conda subdir")
    for field in ("depends", "constrains"):
        value = index.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidPackage(f"info/index.json '{field}' must be a list of strings")
    return str(index["subdir"])


def read_index_json(path: str, filename: str) -> dict[str, Any]:
    """Stream the info part of the archive at `path` and return its parsed index.json."""
    try:
        with open(path, "rb") as f:
            # A .conda names its info member after its own stem: read that name from the zip,
            # so a renamed file is reported as a mismatch rather than as corrupt.
            inner = _conda_stem(f) + ".conda" if filename.endswith(".conda") else filename
            f.seek(0)
            for tar, member in package_streaming.stream_conda_info(inner, f):
                check_member_name(member.name)
                if member.name.removeprefix("./") != "info/index.json":
                    continue
                if not member.isfile() or member.size > _MAX_INDEX_JSON:
                    raise InvalidPackage("info/index.json is not a regular file of sane size")
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise InvalidPackage("info/index.json cannot be read")
                return json.loads(extracted.read())
    except InvalidPackage:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidPackage(f"info/index.json is not valid JSON: {exc.msg}") from None
    except Exception as exc:  # zipfile, tarfile, zstd, bz2 and EOF errors all mean the same here
        raise InvalidPackage(
            f"corrupt or truncated archive: {type(exc).__name__}: {exc}"[:300]
        ) from None
    raise InvalidPackage("the archive has no info/index.json")


def _conda_stem(f: BinaryIO) -> str:
    with zipfile.ZipFile(f) as z:
        for name in z.namelist():
            if name.startswith("info-") and name.endswith(".tar.zst") and "/" not in name:
                return name[len("info-") : -len(".tar.zst")]
    raise InvalidPackage("the archive has no info-<name>.tar.zst member")


def make_record(index: dict[str, Any], md5: str, sha256: str, size: int) -> dict[str, Any]:
    """The repodata record: index.json plus what an indexer computes over the whole file."""
    return {**index, "md5": md5, "sha256": sha256, "size": size}
