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
import hashlib
import mmap
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import msgpack
import msgspec

from ..rules.codecs import encode_msgpack, zstd_compress
from ..rules.merge import shard_bytes
from ..rules.policy import compile_policy
from ..rules.policy_view import filter_repodata
from ..rules.rewrite import PACKAGE_BASE, SHARD_BASE
from ..storage.blobs import BlobStore
from ..storage.publish_times import load_times, save_times
from .variants import Built, write_variant

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
        files = {
            "zst": write_variant(tmp_dir, "zst", zstd_compress(filtered.document), digest),
            "held": write_variant(tmp_dir, "held", held),
            "served": write_variant(tmp_dir, "served", served),
        }
        files["json"] = json_file.result()
    return Built(digest, files), filtered.next_release


def shards_job(
    json_path: str, subdir: str, blob_root: str, tmp_dir: str
) -> tuple[Built, list[tuple[str, int]]]:
    """Shards of the filtered view, stored as blobs; returns the index and (sha256, size) of
    every shard it names."""
    document = msgspec.json.decode(Path(json_path).read_bytes())
    by_name: dict[str, dict[str, Any]] = {}
    for key in ("packages", "packages.conda"):
        for filename, record in (document.get(key) or {}).items():
            if isinstance(record, dict):
                by_name.setdefault(str(record.get("name", "")), {})[filename] = record
    store = BlobStore(Path(blob_root), Path(tmp_dir))
    shards: dict[str, bytes] = {}
    stored = []
    written = 0
    for name, records in sorted(by_name.items()):
        data = shard_bytes(records)
        sha = hashlib.sha256(data)
        if not store.exists(sha.hexdigest()):
            _write(store.location(sha.hexdigest()), data, tmp_dir)
            written += 1
        shards[name] = sha.digest()
        stored.append((sha.hexdigest(), len(data)))
    if written:
        # One flush for all of them (an fsync each costs minutes for 60,000 shards); the
        # caller indexes them only after this, so no entry names a shard a crash could lose.
        os.sync()
    info = dict(document.get("info") or {})
    info.setdefault("subdir", subdir)
    info["base_url"], info["shards_base_url"] = PACKAGE_BASE, SHARD_BASE
    index = {"version": 1, "info": info, "shards": shards}
    variant = write_variant(tmp_dir, "body", zstd_compress(encode_msgpack(index)))
    return Built(variant[1], {"body": variant}), stored


def _write(location: str, data: bytes, tmp_dir: str) -> None:
    """Whole or not at all: a temp file (swept at start if a crash leaves it), renamed
    (durability: see shards_job)."""
    os.makedirs(os.path.dirname(location), exist_ok=True)
    tmp = os.path.join(tmp_dir, f"{os.getpid()}-{os.urandom(6).hex()}.shard.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, location)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
