"""Adopting a built snapshot: its files moved into the key's store, then the entry naming them
written to the index, then what the previous entry named deleted (metadata.py). In that order,
a reader finds a whole old snapshot or a whole new one; a failure leaves no file named by
nothing. Runs in a thread or a worker process: synchronous file and index calls only."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..storage.blobs import BlobStore, placed_stamp
from ..storage.index import Index, MetaEntry, Variant
from ..storage.keys import MetaKey
from .variants import Built


@dataclass(frozen=True)
class Fetched:
    """Where a snapshot came from, as the index keeps it (no credential: upstream.kept)."""

    source: str
    etag: str | None = None
    modified: str | None = None


def adopt(
    index: Index, store: BlobStore, key: MetaKey, fetched: Fetched, built: Built, now: float
) -> MetaEntry:
    """Move the built files into `store`, then write the entry naming them, then delete what
    the previous entry named."""
    old = index.get_meta(key)
    variants = {}
    for name, (path, sha, size) in built.files.items():
        stamp = placed_stamp(path)  # this server's own file, for every worker (at_rest.py)
        store.place(path, sha)
        inflated = built.inflated if name == "zst" else 0
        variants[name] = Variant(sha, size, inflated, built.contents.get(name, ""), stamp)
    unchanged = old is not None and old.digest == built.digest
    entry = MetaEntry(
        source_url=fetched.source,
        etag=fetched.etag,
        last_modified=fetched.modified,
        fetched_at=now,
        changed_at=old.changed_at if unchanged and old is not None else now,
        digest=built.digest,
        variants={**(old.variants if unchanged and old else {}), **variants},
        origins=built.origins,
    )
    try:
        index.put_meta(key, entry)
    except BaseException:  # e.g. a full index: the files moved in are named by nothing
        named = {v.sha256 for v in old.variants.values()} if old is not None else set()
        for variant in variants.values():
            if variant.sha256 not in named:
                store.delete(variant.sha256)
        raise
    with contextlib.suppress(OSError):  # a hint: a full index keeps it a moment longer
        index.forget_missing(key)
    if old is not None:
        keep = {v.sha256 for v in entry.variants.values()}
        for variant in old.variants.values():
            if variant.sha256 not in keep:
                store.delete(variant.sha256)  # open readers keep their descriptor
    return entry
