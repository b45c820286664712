"""Pure rules for putting uploaded packages over an upstream channel. No I/O.

Shadowing (dependency confusion, shadowing.py): an uploaded package name hides every upstream
record whose `name` field or file name names it in any case, unless the channel lists the name
in `allow_upstream`; an uploaded file replaces the upstream file of the same file name either way.

conda-forge's linux-64 repodata.json has ~500,000 records in ~280 MB. The merged document is
planned over the upstream bytes and produced as a stream of pieces, most of them views of the
upstream buffer (an mmap in the proxy), so neither document is ever held in memory whole:

- the top level is decoded into undecoded values (`msgspec.Raw`, views of the buffer), which
  also proves the whole document well-formed; every key but the two package maps passes through
  byte for byte (unknown keys such as `v3` survive);
- when searches of the document in C prove that no upstream record can be dropped
  (shadow_search.py: no escaped key, no key or `name` value naming a shadowed name in any
  case, no key equal to a local file name), each package map passes through byte for byte,
  with the local records spliced in before its closing brace;
- otherwise a package map is decoded twice: into its records' `name` fields alone, which
  tells the hidden ones, then into its members, records still undecoded (`Raw`: their bytes
  are not copied); the hidden ones are dropped and the rest written out again in batches.
  A search alone cannot tell a member of the map from the same key nested in a record (a field
  of a package's index.json), so cutting at search hits could corrupt a record or the document.

Either way the result decodes to exactly what decoding both maps, deleting, inserting and
re-encoding gives (tests/rules/test_merge_stream.py compares the two on random documents): the
same keys in the same order, upstream members first, then the local records by file name.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack
import msgspec
import zstandard

from .codecs import decode_json
from .json_search import CLOSE, OPEN, QUOTE, Doubt, Searchable, first_token
from .shadow_search import MAX_SEARCHES, nothing_to_drop
from .shadowing import dropped, package_name, shadowed_names

Record = dict[str, Any]
# What a merged document is made of: small encoded bytes, or views of the upstream buffer.
Piece = bytes | memoryview
Upstream = Searchable  # bytes, or the mapped snapshot file

PACKAGE_MAPS = (("packages", ".tar.bz2"), ("packages.conda", ".conda"))
BATCH = 2_000  # members re-encoded at a time (~1.4 MB of output for conda-forge's records)
__all__ = ["MAX_SEARCHES", "package_name", "shadowed_names"]


def empty_repodata(subdir: str) -> bytes:
    return msgspec.json.encode(
        {
            "info": {"subdir": subdir},
            "packages": {},
            "packages.conda": {},
            "removed": [],
            "repodata_version": 1,
        }
    )


@dataclass
class _Members:
    """A package map written out again from its members: keys encoded, records as they came."""

    members: dict[str, msgspec.Raw]
    encoder: msgspec.json.Encoder

    @cached_property
    def size(self) -> int:
        """Bytes of `{k1:v1,k2:v2}`: braces, keys, colons, values and commas."""
        n = len(self.members)
        keys, encoded_keys = iter(self.members), 0
        while batch := list(itertools.islice(keys, BATCH)):
            # `[k1,k2]` is the encoded keys, two brackets and one comma less than keys.
            encoded_keys += len(self.encoder.encode(batch)) - 2 - (len(batch) - 1)
        return 2 + encoded_keys + n + sum(map(len, self.members.values())) + max(n - 1, 0)

    def pieces(self) -> Iterator[Piece]:
        yield b"{"
        items = iter(self.members.items())
        first = True
        while batch := dict(itertools.islice(items, BATCH)):
            if not first:
                yield b","
            yield memoryview(self.encoder.encode(batch))[1:-1]
            first = False
        yield b"}"


@dataclass
class MergedDocument:
    """A merged repodata.json as a plan: its size, known before a byte is written, and its
    pieces in order. Views of the upstream buffer stay valid while this object lives."""

    parts: list[Piece | _Members]

    @cached_property
    def size(self) -> int:
        return sum(p.size if isinstance(p, _Members) else len(p) for p in self.parts)

    def pieces(self) -> Iterator[Piece]:
        for part in self.parts:
            if isinstance(part, _Members):
                yield from part.pieces()
            else:
                yield part


def merged_repodata(
    upstream: Upstream | None,
    local: Mapping[str, Record],
    subdir: str,
    allow_upstream: Iterable[str],
    shadow: set[str] | None = None,
) -> MergedDocument:
    """Upstream repodata with the local records over it (see the module docstring). `shadow`:
    the names the channel's uploads hide, from every subdir (a client reads its platform's and
    noarch together); by default those of `local`."""
    buf = upstream or empty_repodata(subdir)
    top = decode_json(buf, dict[str, msgspec.Raw])
    if shadow is None:
        shadow = shadowed_names(local, allow_upstream)
    encoder = msgspec.json.Encoder()
    mine = {
        key: dict(sorted((fn, r) for fn, r in local.items() if fn.endswith(ext)))
        for key, ext in PACKAGE_MAPS
    }
    maps = [key for key, _ in PACKAGE_MAPS if key in top or mine[key]]
    verbatim = not any(key in top for key in maps) or nothing_to_drop(buf, shadow, local)
    parts: list[Piece | _Members] = [b"{"]
    for i, key in enumerate([*top, *(key for key in maps if key not in top)]):
        parts.append((b"," if i else b"") + encoder.encode(key) + b":")
        if key not in maps:
            parts.append(memoryview(top[key]))
        elif key not in top:
            parts.append(encoder.encode(mine[key]))
        elif verbatim and _splices(memoryview(top[key])):
            parts += _spliced(memoryview(top[key]), mine[key], encoder)
        else:
            parts.append(_Members(_members(top[key], shadow, local, mine[key], encoder), encoder))
    parts.append(b"}")
    return MergedDocument(parts)


def merge_repodata(
    upstream: Upstream | None,
    local: Mapping[str, Record],
    subdir: str,
    allow_upstream: Iterable[str],
    shadow: set[str] | None = None,
) -> bytes:
    """The merged document in memory, for small documents (see `merged_repodata`)."""
    return b"".join(merged_repodata(upstream, local, subdir, allow_upstream, shadow).pieces())


def _splices(view: memoryview) -> bool:
    """Whether an upstream map value can be spliced: an object whose first member (or end)
    is near its opening brace. Anything else is left to decoding (which refuses a non-object
    as the full decode does)."""
    try:
        return view[0] == OPEN and first_token(view, 1) in (QUOTE, CLOSE)
    except Doubt:
        return False


def _spliced(
    view: memoryview, mine: Mapping[str, Record], encoder: msgspec.json.Encoder
) -> list[Piece]:
    """An upstream map byte for byte, the local records inserted before its closing brace."""
    if not mine:
        return [view]
    # After '{' comes '"' (a member) or '}' (none); `merged_repodata` checked it is near.
    comma = b"," if first_token(view, 1) == QUOTE else b""
    return [view[:-1], comma + encoder.encode(mine)[1:-1] + b"}"]


def _members(
    raw: msgspec.Raw,
    shadow: set[str],
    local: Mapping[str, Record],
    mine: Mapping[str, Record],
    encoder: msgspec.json.Encoder,
) -> dict[str, msgspec.Raw]:
    """The members of an upstream map less the hidden ones, then the local records."""
    hidden = _hidden(raw, shadow, local)
    members = decode_json(raw, dict[str, msgspec.Raw])
    for fn in hidden:
        del members[fn]
    for fn, record in mine.items():
        members[fn] = msgspec.Raw(encoder.encode(record))
    return members


class _Named(msgspec.Struct):
    """A record's `name` field alone (msgspec skips the other fields without building them)."""

    name: Any = None


def _hidden(raw: msgspec.Raw, shadow: set[str], local: Mapping[str, Record]) -> list[str]:
    """The file names of an upstream map the rule hides, read from the records' `name` fields
    in a pass of their own, before the members are decoded: the two are never in memory
    together. Duplicate keys and fields: the last one counts, as in the members."""
    try:
        named = decode_json(raw, dict[str, _Named])
    except msgspec.ValidationError:  # a record (or the map) is not an object: one by one
        members = decode_json(raw, dict[str, msgspec.Raw])
        return dropped(((fn, _name_of(r)) for fn, r in members.items()), shadow, local)
    return dropped(((fn, r.name) for fn, r in named.items()), shadow, local)


def _name_of(record: msgspec.Raw) -> Any:
    value = decode_json(record)
    return value.get("name") if isinstance(value, dict) else None


# CEP-16 shards


def shard_bytes(records: Mapping[str, Record]) -> bytes:
    """zstd(msgpack(shard)) for one package name; sha256/md5 as raw bytes (CEP-16)."""

    def binary(record: Record) -> Record:
        out = dict(record)
        for field in ("sha256", "md5"):
            if isinstance(out.get(field), str):
                out[field] = bytes.fromhex(out[field])
        return out

    shard = {
        "packages": {fn: binary(r) for fn, r in sorted(records.items()) if fn.endswith(".tar.bz2")},
        "packages.conda": {
            fn: binary(r) for fn, r in sorted(records.items()) if fn.endswith(".conda")
        },
        "removed": [],
    }
    return zstandard.ZstdCompressor(level=6).compress(msgpack.packb(shard, use_bin_type=True))


def shard_records(shard: Any) -> dict[str, Record]:
    """Records of a decoded shard, keyed by file name, checksums back as hex. A shard is an
    upstream's msgpack, any shape: one that is not a map of package maps, each a map of file
    names to record maps, raises ValueError (callers answer the upstream's error, a 502)."""
    if not isinstance(shard, Mapping):
        raise ValueError(f"a shard must be a map, not {type(shard).__name__}")
    out: dict[str, Record] = {}
    for key, ext in PACKAGE_MAPS:
        records = shard.get(key) or {}
        if not isinstance(records, Mapping):
            raise ValueError(f"'{key}' must be a map, not {type(records).__name__}")
        for fn, record in records.items():
            if not isinstance(fn, str) or not isinstance(record, Mapping):
                raise ValueError(f"'{key}' must map file names to records")
            if fn in out and not fn.endswith(ext):
                # Listed in both maps: the map of its kind decides, as in repodata
                # (records.find_record), not whichever map was read last.
                continue
            rec = dict(record)
            for field in ("sha256", "md5"):
                if isinstance(rec.get(field), bytes):
                    rec[field] = rec[field].hex()
            out[fn] = rec
    return out


def merged_shard_index(
    upstream: Mapping[str, Any] | None,
    local_shards: Mapping[str, bytes],
    subdir: str,
    shadow: Iterable[str] = (),
) -> dict[str, Any]:
    """The shard index with each local name pointing at its merged shard (sha256 bytes). An
    upstream shard whose name is a local name in any case (`Ours` for `ours`) is gone: the
    merged shard holds what of it `allow_upstream` lets through (shadowing.py). So is the
    upstream shard of a name in `shadow` (the names uploaded in another subdir of the channel)."""
    base: dict[str, Any] = dict(upstream) if upstream else {"version": 1}
    info = dict(base.get("info") or {})
    info.setdefault("subdir", subdir)
    info["base_url"] = "./"
    info["shards_base_url"] = "./shards/"
    local = {name.lower() for name in local_shards} | {name.lower() for name in shadow}
    upstream_shards = base.get("shards")
    shards = {
        name: sha
        for name, sha in (upstream_shards.items() if isinstance(upstream_shards, dict) else ())
        if not (isinstance(name, str) and name.lower() in local)
    }
    for name, data in local_shards.items():
        shards[name] = hashlib.sha256(data).digest()
    return {**base, "info": info, "shards": shards}
