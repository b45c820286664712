"""What a channel subdir holds, for browsing, read from what is cheap. Read-only.

A conda-forge subdir has ~400,000 records (repodata.json ~280 MB) under ~25,000 names, so a
page never decodes the whole document:
- with a CEP-16 shard index (a few MB), the names are its keys, and one name's files are its
  shard (one small file);
- without, the names come from the keys of the package maps of repodata.json (values are
  skipped, not decoded: msgspec.Raw), once per snapshot, in the worker process for a big one;
  one name's files are found by a bounded scan for `"<name>-` keys, each record decoded alone.

Listings are kept per snapshot (the key names the snapshot's content), a few at a time.
Everything read here comes from an upstream: names that are not conda names are left out,
and record fields are type-checked before they are shown.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import mmap
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from ..rules.codecs import decode_json, decode_msgpack, zstd_decompress
from ..rules.paths import MAX_SEGMENT
from ..rules.routing import PACKAGE_NAME_RE, PACKAGE_RE

MAX_FILES = 5_000  # files listed for one name (conda-forge's busiest names have ~3,000 per subdir)
MAX_CANDIDATES = 200_000  # `"<name>-` occurrences looked at in one scan
_WINDOWS = (16 << 10, 256 << 10, 4 << 20)  # bytes tried, in turn, to decode one record
_KEY_END = re.compile(rb"\s*:\s*\{")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")

T = TypeVar("T")


@dataclass(frozen=True)
class Listing:
    """The package names of one subdir snapshot, sorted; `counts[i]` is how many files
    `names[i]` has (None with shards, whose index names no files); `shards` maps each name to
    its shard's sha256 (hex); `path` is the repodata.json scanned for a name's files."""

    source: str  # "shards" | "repodata"
    names: list[str]
    counts: list[int] | None = None
    shards: dict[str, str] = field(default_factory=dict)
    path: str | None = None

    def starting_with(self, prefix: str) -> tuple[int, int]:
        """The [start, end) positions of the names that start with `prefix` (a bisection)."""
        start = bisect.bisect_left(self.names, prefix)
        end = bisect.bisect_left(self.names, prefix + "\U0010ffff") if prefix else len(self.names)
        return start, end


@dataclass(frozen=True)
class FileRow:
    filename: str
    version: str
    build: str
    size: int | None
    sha256: str | None
    timestamp: float | None  # seconds

    def public(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "version": self.version,
            "build": self.build,
            "size": self.size,
            "sha256": self.sha256,
            "timestamp": self.timestamp,
        }


def file_row(filename: str, record: Any) -> FileRow | None:
    """A row for a record from upstream metadata, its fields checked; None if unusable."""
    match = PACKAGE_RE.match(filename)
    if match is None or not isinstance(record, Mapping):
        return None
    size: Any = record.get("size")
    sha: Any = record.get("sha256")
    stamp: Any = record.get("timestamp")
    if isinstance(sha, bytes):
        sha = sha.hex()
    return FileRow(
        filename=filename,
        version=match["version"],
        build=match["build"],
        size=size if _number(size) else None,
        sha256=sha if isinstance(sha, str) and _SHA256.match(sha) else None,
        # repodata timestamps are milliseconds; old records have seconds
        timestamp=(stamp / 1000 if stamp > 1e11 else float(stamp)) if _number(stamp) else None,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def sorted_rows(rows: Mapping[str, Any]) -> list[FileRow]:
    """Rows newest first (by timestamp, then file name)."""
    made = [r for fn, rec in rows.items() if (r := file_row(fn, rec)) is not None]
    return sorted(made, key=lambda r: (-(r.timestamp or 0.0), r.filename))


# shards


def shard_index_listing(data: bytes, limit: int) -> Listing:
    """The names of a CEP-16 shard index (zstd msgpack), at most `limit` bytes decoded."""
    index = decode_msgpack(zstd_decompress(data, limit))
    shards = index.get("shards") if isinstance(index, dict) else None
    found = {
        name: digest.hex()
        for name, digest in (shards.items() if isinstance(shards, dict) else ())
        if isinstance(name, str) and PACKAGE_NAME_RE.match(name)
        if isinstance(digest, bytes) and len(digest) == 32
    }
    return Listing("shards", sorted(found), None, found)


def shard_rows(data: bytes, name: str, limit: int) -> list[FileRow]:
    """The files of one name's shard (zstd msgpack): records of other names are left out."""
    shard = decode_msgpack(zstd_decompress(data, limit))
    rows: dict[str, Any] = {}
    for key in ("packages", "packages.conda"):
        records = shard.get(key) if isinstance(shard, dict) else None
        for fn, record in records.items() if isinstance(records, dict) else ():
            if isinstance(fn, str) and isinstance(record, dict) and record.get("name") == name:
                rows[fn] = record
    return sorted_rows(rows)[:MAX_FILES]


# repodata.json


class _Keys(msgspec.Struct):
    packages: dict[str, msgspec.Raw] = {}
    packages_conda: dict[str, msgspec.Raw] = msgspec.field(default={}, name="packages.conda")


def _keys(buf: Any) -> list[str]:
    # The decoded maps hold views into `buf`: they must be gone before the caller closes it.
    keys = decode_json(buf, _Keys)
    return [*keys.packages, *keys.packages_conda]


def repodata_listing(path: str) -> Listing:
    """The names in a repodata.json and how many files each has (a `.conda` and a `.tar.bz2`
    of one stem count once). Module-level: runs in the worker process for a big document."""
    with open(path, "rb") as f:
        if not f.seek(0, 2):
            return Listing("repodata", [], [], path=path)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            keys = _keys(buf)
    stems: dict[str, set[str]] = {}
    for key in keys:
        match = PACKAGE_RE.match(key)
        if match is not None:
            stems.setdefault(match["name"], set()).add(key[: match.start("ext") - 1])
    names = sorted(stems)
    return Listing("repodata", names, [len(stems[n]) for n in names], path=path)


def scan_repodata(path: str, name: str) -> tuple[list[FileRow], bool]:
    """The files of `name` in a repodata.json, found by their keys (`"<name>-...": {`), each
    record decoded alone; at most MAX_FILES, looking at most at MAX_CANDIDATES occurrences.
    Returns the rows and whether the scan stopped at a bound."""
    needle = b'"' + name.encode("ascii") + b"-"
    found: dict[str, Any] = {}
    truncated = False
    with open(path, "rb") as f:
        if not f.seek(0, 2):
            return [], False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos, seen = buf.find(needle), 0
            while pos != -1:
                seen += 1
                if seen > MAX_CANDIDATES or len(found) >= MAX_FILES:
                    truncated = True
                    break
                end = buf.find(b'"', pos + 1, pos + 2 + MAX_SEGMENT)
                if end != -1:
                    key = buf[pos + 1 : end].decode("latin-1")
                    match = PACKAGE_RE.match(key)
                    tail = _KEY_END.match(buf, end + 1) if match else None
                    if match and match["name"] == name and tail is not None:
                        record = _object_at(buf, tail.end() - 1)
                        if isinstance(record, dict):
                            found[key] = record
                pos = buf.find(needle, pos + 1)
    return sorted_rows(found), truncated


def _object_at(buf: Any, start: int) -> Any:
    """The JSON object that starts at `start`, decoded from a window of the document."""
    for size in _WINDOWS:
        text = buf[start : start + size].decode("utf-8", "replace")
        try:
            return json.JSONDecoder().raw_decode(text)[0]
        except ValueError:
            if start + size >= len(buf):
                return None
    return None


# kept per snapshot


class Memo(Generic[T]):
    """A few values by key, least recently used dropped first; one computation per key at a
    time, however many ask."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, T] = OrderedDict()
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def peek(self, key: Hashable) -> T | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        value = self.peek(key)
        if value is not None:
            return value
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                value = self.peek(key)
                if value is None:
                    value = await make()
                    self._values[key] = value
                    while len(self._values) > self.size:
                        self._values.popitem(last=False)
                return value
        finally:
            if not lock.locked():
                self._locks.pop(key, None)
