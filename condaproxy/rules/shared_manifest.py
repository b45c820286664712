"""Pure rules: is an upload manifest read from the shared bucket one this proxy could have
written? No I/O.

The bucket is shared with every replica and anyone holding its credentials, so its manifests
are input like any other. An entry's sha256 names a local file (`<root>/<aa>/<bb>/<sha256>`)
that is served, and deleted once no manifest names it: a sha256 that is not 64 hex digits could
name any file on the replica. Its subdir and file name are those a client asks for, and its
record goes into every client's merged repodata. So every entry is held to what an upload
through this proxy produces (the same rules as publish.py's) before a replica adopts it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .archive import InvalidPackage, check_filename
from .records_check import InvalidRecord, check_record
from .routing import SUBDIR_RE

SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


class BadManifest(ValueError):
    """The manifest (or one of its entries) is not one this proxy writes."""


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_subdir(subdir: Any, body: Any) -> None:
    """A subdir's table: a conda subdir name, a generation, a table of files."""
    if not isinstance(subdir, str) or not SUBDIR_RE.match(subdir):
        raise BadManifest(f"subdir {str(subdir)[:80]!r} is not a conda subdir")
    if not isinstance(body, Mapping) or not _count(body.get("generation", 0)):
        raise BadManifest(f"subdir {subdir!r} has no valid generation")
    if not isinstance(body.get("files", {}), Mapping):
        raise BadManifest(f"subdir {subdir!r} has no valid files table")


def check_entry(channel: str, subdir: str, filename: str, entry: Any) -> None:
    """One upload, as `manifest.subdirs[subdir].files[filename]` (already typed as an
    Upload's fields): named consistently, a content address, a record any client reads."""
    where = f"{subdir}/{str(filename)[:120]!r}"
    try:
        name, version, build, _ = check_filename(filename)
    except InvalidPackage as exc:
        raise BadManifest(f"{where}: {exc.message}") from None
    if (entry.channel, entry.subdir, entry.filename) != (channel, subdir, filename):
        raise BadManifest(f"{where}: names another channel, subdir or file")
    if not isinstance(entry.sha256, str) or not SHA256_RE.match(entry.sha256):
        raise BadManifest(f"{where}: sha256 is not 64 lower-case hex digits")
    if not _count(entry.size):
        raise BadManifest(f"{where}: size is not a byte count")
    record = entry.record
    try:
        check_record(record)
    except InvalidRecord as exc:
        raise BadManifest(f"{where}: record: {exc.message}") from None
    if (record["name"], record["version"], record["build"], record["subdir"]) != (
        name,
        version,
        build,
        subdir,
    ):
        raise BadManifest(f"{where}: the record describes another package")
    if record.get("sha256", entry.sha256) != entry.sha256:
        raise BadManifest(f"{where}: the record's sha256 is not the entry's")
