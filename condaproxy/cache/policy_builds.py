"""Building the policy's views (issue 13): module-level jobs, so a big document is filtered in
the worker process and the event loop never waits on it.

- `filter_job`: the source repodata (upstream or merged) -> the filtered json and zst variants,
  the held records ("held", msgpack) and the served file names ("served", msgpack), and the
  subdir's first-seen map brought up to date (storage/publish_times.py).
- `shards_job`: the filtered json -> one CEP-16 shard per package name and their index, so
  sharded clients see exactly the records (and `indexed_timestamp`s) of repodata.json.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import mmap
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import msgpack
import msgspec

from ..rules.codecs import decode_json, encode_msgpack, zstd_compress
from ..rules.merge import shard_bytes
from ..rules.policy import compile_policy
from ..rules.policy_view import filter_repodata
from ..rules.rewrite import PACKAGE_BASE, SHARD_BASE
from ..storage.blobs import BlobStore
from ..storage.publish_times import load_times, save_times
from .variants import Built, temp_path, write_variant

POLICY_FORMAT = "1"  # bump when the filter changes: the digest names the output


def filter_job(
    source_path: str,
    times_file: str,
    policy_config: tuple[Any, ...],
    channel: str,
    subdir: str,
    now: float,
    local: Collection[str],
    tmp_dir: str,
    source: str,
) -> tuple[Built, float | None]:
    policy = compile_policy(*policy_config)
    known = load_times(times_file)
    with open(source_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        filtered = filter_repodata(m, known, policy, channel, subdir, now, frozenset(local))  # type: ignore[arg-type]
    if filtered.first_seen != known:
        save_times(times_file, filtered.first_seen)
    # A function of its inputs: the source, and which records the clock holds right now.
    names = "\n".join(sorted(filtered.held))
    digest = hashlib.sha256(f"{POLICY_FORMAT}|{source}|{names}".encode()).hexdigest()
    held = msgpack.packb(filtered.held, use_bin_type=True)
    served = msgpack.packb(filtered.served, use_bin_type=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        json_file = pool.submit(write_variant, tmp_dir, "json", filtered.document, f"{digest}-json")
        json_sha = pool.submit(lambda: hashlib.sha256(filtered.document).hexdigest())
        compressed = zstd_compress(filtered.document)
        files = {
            "zst": write_variant(tmp_dir, "zst", compressed, digest),
            "held": write_variant(tmp_dir, "held", held),
            "served": write_variant(tmp_dir, "served", served),
        }
        files["json"] = json_file.result()
        contents = {"zst": hashlib.sha256(compressed).hexdigest(), "json": json_sha.result()}
    return Built(digest, files, contents=contents), filtered.next_release


class _Name(msgspec.Struct):
    name: Any = ""


_NAME = msgspec.json.Decoder(_Name)


def _grouped(document: bytes) -> tuple[dict[str, Any], dict[str, dict[str, msgspec.Raw]]]:
    """The document's info, and its records grouped by package name, still undecoded."""
    top = decode_json(document, dict[str, msgspec.Raw])
    by_name: dict[str, dict[str, msgspec.Raw]] = {}
    for key in ("packages", "packages.conda"):
        if key not in top:
            continue
        for filename, raw in decode_json(top[key], dict[str, msgspec.Raw]).items():
            try:
                name = str(_NAME.decode(raw).name)
            except msgspec.DecodeError:
                continue  # not a record object: nothing a shard could carry
            by_name.setdefault(name, {})[filename] = raw
    info = decode_json(top["info"]) if "info" in top else {}
    return info if isinstance(info, dict) else {}, by_name


def shards_job(
    json_path: str, subdir: str, blob_root: str, tmp_dir: str, previous: str | None
) -> tuple[Built, list[tuple[str, int]]]:
    """Shards of the filtered view, stored as blobs. A name whose records are byte for byte
    those of the previous build (`previous`: its "names" variant) keeps its shard, so an
    upstream change costs the names it touched. Returns the index (and the new "names"
    variant) and the (sha256, size) of each shard not named by the previous build."""
    info, by_name = _grouped(Path(json_path).read_bytes())
    before: dict[str, list[Any]] = {}
    if previous is not None:
        with contextlib.suppress(OSError, ValueError):
            before = msgpack.unpackb(Path(previous).read_bytes())
    store = BlobStore(Path(blob_root), Path(tmp_dir))
    shards: dict[str, bytes] = {}
    names: dict[str, list[Any]] = {}
    new = []
    for name, raws in sorted(by_name.items()):
        inputs = hashlib.sha256()
        for filename, raw in sorted(raws.items()):
            inputs.update(b"%d:%s%d:" % (len(filename), filename.encode(), len(raw)))
            inputs.update(raw)
        seen = before.get(name)
        if seen is not None and seen[0] == inputs.hexdigest() and store.exists(seen[1]):
            sha_hex, size = seen[1], seen[2]
        else:
            data = shard_bytes({fn: decode_json(raw) for fn, raw in raws.items()})
            sha_hex, size = hashlib.sha256(data).hexdigest(), len(data)
            if not store.exists(sha_hex):
                _write(store.location(sha_hex), data, tmp_dir)
            new.append((sha_hex, size))
        shards[name] = bytes.fromhex(sha_hex)
        names[name] = [inputs.hexdigest(), sha_hex, size]
    if new:
        # One flush for all of them (an fsync each costs minutes for 60,000 shards); the
        # caller indexes them only after this, so no entry names a shard a crash could lose.
        os.sync()
    info.setdefault("subdir", subdir)
    info["base_url"], info["shards_base_url"] = PACKAGE_BASE, SHARD_BASE
    index = {"version": 1, "info": info, "shards": shards}
    variant = write_variant(tmp_dir, "body", zstd_compress(encode_msgpack(index)))
    files = {"body": variant, "names": write_variant(tmp_dir, "names", msgpack.packb(names))}
    return Built(variant[1], files), new


def _write(location: str, data: bytes, tmp_dir: str) -> None:
    """Whole or not at all: a temp file (swept at start if a crash leaves it), renamed
    (durability: see shards_job)."""
    os.makedirs(os.path.dirname(location), exist_ok=True)
    tmp = temp_path(tmp_dir, "shard")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, location)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
