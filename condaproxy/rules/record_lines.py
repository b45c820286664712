"""Pure rule: what a package miss needs of a big snapshot's records (its name, sha256, md5,
size), one sorted line per file name, searched in place (rules/sorted_lines). No I/O.

Without shards, a miss in a conda-forge-sized subdir found its record by parsing the whole
JSON (find_record: 0.18 s for 280 MB, holding the GIL) every time. These lines are made once
per snapshot, in the worker process, by the same reading rules as find_record: the map of the
file's kind first (`packages.conda` for a `.conda`, else `packages`), the other when the first
does not list it, the last of duplicate keys, a value that is no object lists nothing, and a
package map that is no object makes the whole document list nothing. Only names a package
file can have are kept (routing.PACKAGE_RE: no tab, no newline, no byte below the tab).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import msgspec

from .codecs import decode_json
from .routing import PACKAGE_RE
from .sorted_lines import Buffer, find_value

FIELDS = ("name", "sha256", "md5", "size")


class _Maps(msgspec.Struct):
    packages: msgspec.Raw = msgspec.Raw(b"{}")
    conda: msgspec.Raw = msgspec.field(default=msgspec.Raw(b"{}"), name="packages.conda")


class _Needed(msgspec.Struct):
    """The fields a miss reads; any type (expected_from_record judges them), the last of
    duplicate keys, as a dict decode keeps it."""

    name: Any = msgspec.UNSET
    sha256: Any = msgspec.UNSET
    md5: Any = msgspec.UNSET
    size: Any = msgspec.UNSET


_MAP = dict[str, msgspec.Raw]


def encode_records(document: Any) -> bytes:
    """The lines of a repodata document (bytes or an mmap of its JSON). Raises
    msgspec.DecodeError when it is no JSON object."""
    return b"".join(record_lines(document))


def record_lines(document: Any) -> Generator[bytes, None, None]:
    """encode_records' lines one by one, in order, so that a big document's are written
    without all of them in memory at once (a generator: close it, and the views it holds into
    `document` go with it). The document is decoded before the first."""
    maps = decode_json(document, _Maps)
    try:
        packages = decode_json(maps.packages, _MAP)
        conda = decode_json(maps.conda, _MAP)
    except msgspec.DecodeError:
        return  # as find_record: a package map that is no object lists nothing
    chosen: dict[str, msgspec.Raw] = {}
    for filename, raw in packages.items():
        if not filename.endswith(".conda") or filename not in conda:
            chosen[filename] = raw
    for filename, raw in conda.items():
        if filename.endswith(".conda") or filename not in packages:
            chosen[filename] = raw
    del packages, conda
    # Sorted by the name's bytes (UTF-8 keeps code point order), as sorted_lines searches.
    yield from _lines(chosen, sorted(f for f in chosen if PACKAGE_RE.match(f)))


def _lines(chosen: dict[str, msgspec.Raw], names: list[str]) -> Iterator[bytes]:
    encode = msgspec.json.encode
    for filename in names:
        try:
            needed = decode_json(chosen[filename], _Needed)
        except msgspec.DecodeError:
            continue  # no object: no record
        yield filename.encode() + b"\t" + encode(needed) + b"\n"  # UNSET fields left out


def find_needed(lines: Buffer, filename: str) -> dict[str, Any] | None:
    """The fields of `filename`'s record in `lines` (encode_records' output), or None. Raises
    ValueError where `lines` is not such a map."""
    found = find_value(lines, filename.encode())
    if found is None:
        return None
    try:
        record = decode_json(found)
    except msgspec.DecodeError:
        raise ValueError("not a map of records") from None  # changed since it was written
    if not isinstance(record, dict):
        raise ValueError("not a map of records")
    return {key: value for key, value in record.items() if key in FIELDS}
