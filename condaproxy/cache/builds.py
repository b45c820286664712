"""What the proxy makes of upstream repodata and shard indexes: one snapshot, every variant.

All variants a client may read for a subdir (repodata.json, .zst, .bz2, current_repodata.json)
derive from the one upstream body fetched last, so they always describe the same snapshot.
Builds read the body from a file and write variant files; they are module-level functions so
that big documents can be built in a worker process.

An upstream body is hostile until proven otherwise: it is decompressed as a stream and never
past `limit` bytes (cache.max_repodata_size), and it must parse as a repodata document (a JSON
object whose `packages`/`packages.conda` are objects, for the subdir asked for) before it may
replace the snapshot clients are served. Anything else is an upstream error: the previous
snapshot stays (stale), or the client gets a 502.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..rules.codecs import (
    SHARD_LIMIT,
    Readable,
    TooLarge,
    decode_content,
    decode_json,
    decode_msgpack,
    zstd_compress,
    zstd_decompress,
)
from ..rules.errors import UpstreamError
from ..rules.rewrite import Origins, rewrite_repodata, rewrite_shard_index, shard_index_is_local
from .variants import Built, file_sha256, temp_path, write_variant
from .workers import BIG, Workers

if TYPE_CHECKING:
    from .inflating import Inflating

# variant name -> (blob variant it is served from, content type)
REPODATA_VARIANTS = {
    "json": ("json", "application/json"),
    # current_repodata.json: the upstream's own subset where there is one (views.py); else, and
    # for merged views, the full snapshot, a valid superset for conda's classic solver.
    "current": ("json", "application/json"),
    "current_zst": ("zst", "application/zstd"),
    "zst": ("zst", "application/zstd"),
    "bz2": ("bz2", "application/x-bzip2"),
}


class _Repodata(msgspec.Struct):
    """The shape every conda client relies on; record maps are checked for syntax only."""

    info: dict[str, Any] | None = None
    packages: msgspec.Raw = msgspec.Raw()
    packages_conda: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="packages.conda")
    repodata_version: int | None = None


def check_repodata(document: Any, url: str, subdir: str | None) -> dict[str, Any]:
    """Refuse a body that is not a repodata document (PROTOCOL.md): it must not replace a
    good snapshot. `document` is bytes-like (mmap is fine); nothing is materialised but its
    `info`, which is returned as a client reads it (escapes decoded, the last of duplicates)."""
    info: dict[str, Any] = {}
    problem = _repodata_problem(document, subdir, info)
    if problem is not None:
        raise UpstreamError(url, problem[:300])
    return info


def _repodata_problem(document: Any, subdir: str | None, info: dict[str, Any]) -> str | None:
    """What is wrong with `document`, or None; fills `info`. The decoded shape holds views
    into the document (msgspec.Raw): it must be gone before the caller closes an mmap under
    it, so it never outlives this frame (an exception raised here would keep it alive)."""
    try:
        shape = decode_json(document, _Repodata)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"not a repodata document: {exc}"
    info.update(shape.info or {})
    # The first byte of each map, without copying hundreds of MB out of the document.
    maps = [memoryview(m)[:1].tobytes() for m in (shape.packages, shape.packages_conda) if len(m)]
    given = (shape.info or {}).get("subdir")
    if not maps:
        return "not a repodata document: no 'packages' or 'packages.conda'"
    if any(m != b"{" for m in maps):
        return "not a repodata document: package maps must be objects"
    if subdir is not None and given is not None and given != subdir:
        # conda raises when info.subdir differs from the subdir it asked for.
        return f"repodata is for subdir {given!r}, not {subdir!r}"
    return None


def _subdir_of(url: str) -> str | None:
    parts = url.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


_NEEDLE = b'"base_url"'


def decompress_to_file(body_path: str, url: str, tmp_dir: str, limit: int) -> tuple[str, bool]:
    """Decompress a .zst body into a file, never past `limit` bytes; returns the path and
    whether `"base_url"` occurs in it (then the document needs a rewrite)."""
    path = temp_path(tmp_dir, "json")
    with open(body_path, "rb") as src:
        return path, decompress_into(src, path, url, limit)


def decompress_into(source: Readable, path: str, url: str, limit: int) -> bool:
    """Decompress the zstd frames read from `source` into a new file at `path`, never past
    `limit` bytes (the file is deleted on any error); whether `"base_url"` occurs in them."""
    tail = b""
    found = False
    try:
        with open(path, "wb") as out:
            for chunk in decode_content(source, "zstd", limit):
                found = found or _NEEDLE in tail + chunk[: len(_NEEDLE)] or _NEEDLE in chunk
                tail = chunk[-len(_NEEDLE) :]
                out.write(chunk)
    except TooLarge as exc:
        os.unlink(path)
        raise UpstreamError(url, f"repodata {exc} (cache.max_repodata_size)") from None
    except ValueError as exc:
        os.unlink(path)
        raise UpstreamError(url, f"unusable repodata: {exc}") from None
    except BaseException:
        os.unlink(path)
        raise
    return found


def _check_file(path: str, url: str) -> dict[str, Any]:
    """The document's `info`, once it reads as a repodata document."""
    if os.path.getsize(path) == 0:
        raise UpstreamError(url, "not a repodata document: empty body")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return check_repodata(buf, url, _subdir_of(url))


async def build_repodata(
    workers: Workers,
    body_path: str,
    url: str,
    tmp_dir: str,
    limit: int,
    early: Inflating | None = None,
) -> Built:
    """Variants of an upstream repodata body (.zst or plain JSON, already size-bounded).
    Decompression streams in a thread (it releases the GIL), or was done while the body
    arrived (`early`, inflating.py); checking and rewriting a big document, which would hold
    the GIL for seconds, runs in the worker process."""
    body_sha256 = None
    if early is not None:
        inflated = await early.result()
        json_path, needs_rewrite = inflated.json_path, inflated.needs_rewrite
        body_sha256 = inflated.body_sha256
    elif url.endswith(".zst"):
        json_path, needs_rewrite = await workers.run(
            False, decompress_to_file, body_path, url, tmp_dir, limit
        )
    else:
        json_path, needs_rewrite = body_path, None
    big = os.path.getsize(json_path) > BIG
    return await workers.run(
        big, finish_repodata, body_path, json_path, needs_rewrite, url, tmp_dir, body_sha256
    )


def finish_repodata(
    body_path: str,
    json_path: str,
    needs_rewrite: bool | None,
    url: str,
    tmp_dir: str,
    body_sha256: str | None = None,
) -> Built:
    """`body_sha256`: the body's hash when it was taken as the body arrived."""
    zst = json_path != body_path
    try:
        info = _check_file(json_path, url)
        if needs_rewrite is None:
            with open(json_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                needs_rewrite = m.find(_NEEDLE) != -1
        # The raw needle misses a key written with an escape ("base\u005furl"), which every
        # client decodes as base_url: the decoded info decides too.
        needs_rewrite = needs_rewrite or "base_url" in info
        if zst and not needs_rewrite:
            # The common case: the upstream's own .zst passes through and its (40 MB, not
            # 280 MB) hash names the snapshot. The decompressed file was only for the check:
            # deleted before writeback, it costs the disk nothing (derived.py makes the JSON
            # variant again if a reader needs it).
            inflated = os.path.getsize(json_path)
            Path(json_path).unlink(missing_ok=True)
            digest = body_sha256 or file_sha256(body_path)
            files = {"zst": (body_path, digest, os.path.getsize(body_path))}
            return Built(digest, files, Origins(), inflated)
        # Mapped, not read: the pages are the file's (page cache), not this process's own
        # memory, which for an 18 MB current_repodata.json was a third of the build's peak.
        with open(json_path, "rb") as f:
            document = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        if zst:
            Path(json_path).unlink(missing_ok=True)
        raise
    try:
        if zst:
            Path(json_path).unlink(missing_ok=True)  # the mapping keeps the pages
        return _rewritten(document, url, tmp_dir)
    finally:
        document.close()


def _rewritten(document: bytes | mmap.mmap, url: str, tmp_dir: str) -> Built:
    """Variants of a document whose URLs must point at the proxy (CEP-15 base_url)."""
    try:
        rewritten, origins = rewrite_repodata(document, url)
    except ValueError as exc:
        raise UpstreamError(url, f"unusable repodata: {exc}"[:300]) from None
    compressed = zstd_compress(rewritten)
    digest = hashlib.sha256(compressed).hexdigest()
    # Only the .zst is stored; the JSON is made from it when a reader needs it (derived.py).
    files = {"zst": write_variant(tmp_dir, "zst", compressed, digest)}
    return Built(digest, files, origins, len(rewritten))


class _JsonObject(msgspec.Struct):
    """Any JSON object: its members are checked for syntax only (nothing materialised)."""


async def build_metadata_file(
    workers: Workers,
    body_path: str,
    url: str,
    tmp_dir: str,
    limit: int,
    early: Inflating | None = None,
) -> Built:
    """A channel's other metadata (channeldata.json, notices.json, run_exports.json[.zst],
    patch_instructions.json, tos.json) is served as the upstream's bytes, but only once they
    read as what every one of those files is, a JSON object: a captive portal's or a broken
    CDN's HTML page answered with a 200 must not replace a good copy (the previous one is
    served stale, or the client gets a 502)."""
    big = os.path.getsize(body_path) > BIG
    return await workers.run(big, _metadata_file, body_path, url, tmp_dir, limit)


def _metadata_file(body_path: str, url: str, tmp_dir: str, limit: int) -> Built:
    document = body_path
    if url.endswith(".zst"):
        document = temp_path(tmp_dir, "json")
        with open(body_path, "rb") as src:
            decompress_into(src, document, url, limit)
    try:
        if os.path.getsize(document) == 0:
            raise UpstreamError(url, "not a JSON object: empty body")
        with open(document, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            try:
                decode_json(m, _JsonObject)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise UpstreamError(url, f"not a JSON object: {exc}"[:300]) from None
    finally:
        if document != body_path:
            Path(document).unlink(missing_ok=True)
    sha = file_sha256(body_path)
    return Built(sha, {"body": (body_path, sha, os.path.getsize(body_path))})


async def build_shard_index(
    workers: Workers,
    body_path: str,
    url: str,
    tmp_dir: str,
    limit: int,
    early: Inflating | None = None,
) -> Built:
    # A real shard index is a few MB (conda-forge: ~25,000 names): a thread, and a tight cap.
    return await workers.run(False, _shard_index, body_path, url, tmp_dir, min(limit, SHARD_LIMIT))


def _shard_index(body_path: str, url: str, tmp_dir: str, limit: int) -> Built:
    """Check an upstream shard index and make it point at the proxy. One that already does
    (relative URLs, as rattler's and conda-index's indexes have) is kept as the upstream's
    own bytes: nothing to encode or compress on the first client's path after a change.
    Decoded under decode_msgpack's item budget, so no part of it (unknown keys included) can
    make a later reader of the stored index allocate without bound."""
    body = Path(body_path).read_bytes()
    try:
        document = zstd_decompress(body, limit)
        index = decode_msgpack(document)
        if not isinstance(index, dict) or not isinstance(index.get("shards"), dict):
            raise ValueError("no 'shards' map")
        if not isinstance(index.get("info", {}), dict):
            raise ValueError("'info' must be a map")
        given, subdir = index.get("info", {}).get("subdir"), _subdir_of(url)
        if given is not None and given != subdir:  # as for repodata (check_repodata)
            raise ValueError(f"the index is for subdir {given!r}, not {subdir!r}")
        shards = index["shards"]
        if not all(isinstance(k, str) for k in shards):
            raise ValueError("'shards' must be keyed by package names")
        if not all(isinstance(v, bytes) and len(v) == 32 for v in shards.values()):
            raise ValueError("'shards' must map names to 32-byte sha256 digests")
        rewritten, origins = rewrite_shard_index(index, url)
        if not shard_index_is_local(index):
            # Only `info` changes: every other top-level value keeps its encoded bytes.
            top = msgspec.msgpack.decode(document, type=dict[str, msgspec.Raw])
            top["info"] = msgspec.Raw(msgspec.msgpack.encode(rewritten["info"]))
            body = zstd_compress(msgspec.msgpack.encode(top))
    except (ValueError, TypeError, msgspec.DecodeError) as exc:  # bad zstd: ValueError
        raise UpstreamError(url, f"unusable shard index: {exc}"[:300]) from None
    variant = write_variant(tmp_dir, "body", body)
    _built_maps.clear()  # the last one only: a hand-over, not a cache
    _built_maps[variant[1]] = shards
    return Built(variant[1], {"body": variant}, origins)


# The name -> digest map of the shard index this process checked last (it runs in a thread of
# the server), for the record lookup that follows it (checksums.py), which would otherwise
# decode the index it was just built from a second time: ~6 ms of a cold miss at 25,000 names.
_built_maps: dict[str, dict[str, bytes]] = {}


def take_built_map(digest: str) -> dict[str, bytes] | None:
    """The map of the stored shard index whose digest is `digest`, if this process just built
    it (once: later lookups use their own cache or the index's name map)."""
    return _built_maps.pop(digest, None)
