"""Pure rules for putting uploaded packages over an upstream channel. No I/O.

Shadowing (dependency confusion): a package name that exists locally hides every upstream
record with that name, unless the channel lists the name in `allow_upstream`; a local file with
the same file name as an upstream one replaces it either way.

conda-forge's linux-64 repodata.json has ~500,000 records in ~235 MB. Decoding and re-encoding
it takes seconds and gigabytes, so the merge works on the bytes: it finds the upstream records to
drop with memchr-speed searches, cuts them out, splices the local records in, and repairs the
commas at each cut. Nothing else of the upstream document is touched (unknown keys survive).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
import msgspec
import zstandard

from .routing import PACKAGE_RE

Record = dict[str, Any]


def package_name(filename: str) -> str | None:
    match = PACKAGE_RE.match(filename)
    return match["name"].lower() if match else None


def shadowed_names(local: Mapping[str, Record], allow_upstream: Iterable[str]) -> set[str]:
    names = {str(r["name"]).lower() for r in local.values()}
    return names - {n.lower() for n in allow_upstream}


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


def _dropped(filenames: Iterable[str], shadow: set[str], local: Mapping[str, Record]) -> list[str]:
    """Upstream file names hidden by the local packages."""
    prefixes = tuple(f"{name}-" for name in shadow)
    drop = [fn for fn in filenames if fn in local]
    if prefixes:
        # str.startswith with a tuple runs in C; the exact name check only on the few hits.
        drop += [
            fn
            for fn in filenames
            if fn.startswith(prefixes) and package_name(fn) in shadow and fn not in local
        ]
    return drop


def merge_repodata(
    upstream: bytes | None, local: Mapping[str, Record], subdir: str, allow_upstream: Iterable[str]
) -> bytes:
    """Upstream repodata bytes with the local records over them (see module docstring).

    Records stay undecoded (`msgspec.Raw`): only the two package maps are split into members,
    so 500,000 upstream records cost about a second and never become Python dicts.
    """
    top = msgspec.json.decode(upstream or empty_repodata(subdir), type=dict[str, msgspec.Raw])
    shadow = shadowed_names(local, allow_upstream)
    encoder = msgspec.json.Encoder()
    for key, ext in (("packages", ".tar.bz2"), ("packages.conda", ".conda")):
        mine = {fn: r for fn, r in local.items() if fn.endswith(ext)}
        if key not in top and not mine:
            continue
        members = msgspec.json.decode(top[key], type=dict[str, msgspec.Raw]) if key in top else {}
        for fn in _dropped(list(members), shadow, local):
            del members[fn]
        for fn, record in sorted(mine.items()):
            members[fn] = msgspec.Raw(encoder.encode(record))
        top[key] = msgspec.Raw(encoder.encode(members))
    return encoder.encode(top)


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


def shard_records(shard: Mapping[str, Any]) -> dict[str, Record]:
    """Records of a decoded shard, keyed by file name, checksums back as hex."""
    out: dict[str, Record] = {}
    for key in ("packages", "packages.conda"):
        for fn, record in (shard.get(key) or {}).items():
            rec = dict(record)
            for field in ("sha256", "md5"):
                if isinstance(rec.get(field), bytes):
                    rec[field] = rec[field].hex()
            out[fn] = rec
    return out


def merged_shard_index(
    upstream: Mapping[str, Any] | None, local_shards: Mapping[str, bytes], subdir: str
) -> dict[str, Any]:
    """The shard index with each local name pointing at its merged shard (sha256 bytes)."""
    base: dict[str, Any] = dict(upstream) if upstream else {"version": 1}
    info = dict(base.get("info") or {})
    info.setdefault("subdir", subdir)
    info["base_url"] = "./"
    info["shards_base_url"] = "./shards/"
    shards = dict(base.get("shards") or {})
    for name, data in local_shards.items():
        shards[name] = hashlib.sha256(data).digest()
    return {**base, "info": info, "shards": shards}
