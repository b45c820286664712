"""Variants derived from a stored snapshot's .zst (`repodata.json` itself, `repodata.json.bz2`,
and the gzip coding of repodata.json): made once per snapshot, in the
background and in the worker process, streaming, never on the request path of a big snapshot
(except the JSON, for a reader that cannot do without it: `materialise`),
never for a HEAD of a big snapshot, and never under the snapshot's own lock (a refresh never
waits for one).

A variant somebody asked for is "wanted" for its key: after each change of the snapshot it is
made again right away, so the next client finds it ready. A big snapshot's variant that is not
ready yet is a 404 (clients fall back to repodata.json.zst or repodata.json); a small one is
made on the spot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable

import structlog

from ..rules.errors import NotFound
from ..storage.blobs import placed_stamp
from ..storage.index import Index, MetaEntry, Variant
from ..storage.keys import MetaKey
from ..storage.locks import KeyedLocks
from .metadata import MetadataCache
from .recoded import bz2_file, gzip_file, json_file, names_file, records_file
from .variants import VariantFile
from .workers import BIG, Workers

log = structlog.get_logger("condaproxy.cache.derived")

# variant name -> (the stored variant it is made from, how). Every snapshot has its .zst.
MAKERS: dict[str, tuple[str, Callable[[str, str], VariantFile]]] = {
    "json": ("zst", json_file),
    "bz2": ("zst", bz2_file),
    "gzip": ("zst", gzip_file),
    # Of a shard index (checksums.py): in the worker process too (it holds no client, and a
    # thread of the server would take the GIL from the requests it serves meanwhile).
    "names": ("body", names_file),
    # Of a big snapshot without shards (checksums.py), for the record lookups of misses.
    "records": ("json", records_file),
}


def document_size(entry: MetaEntry) -> int:
    """How big the JSON document of a snapshot is (what a derived variant costs to make);
    unknown counts as big."""
    if "json" in entry.variants:
        return entry.variants["json"].size
    zst = entry.variants.get("zst")
    return zst.inflated if zst is not None and zst.inflated else BIG + 1


class Derived:
    def __init__(
        self, meta: MetadataCache, index: Index, locks: KeyedLocks, workers: Workers
    ) -> None:
        self.meta = meta
        self.index = index
        self.locks = locks
        self.workers = workers
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._wanted: dict[str, set[str]] = {}  # read once per key and process; rarely grows

    def wanted(self, key: MetaKey) -> set[str]:
        found = self._wanted.get(str(key))
        if found is None:
            found = self._wanted[str(key)] = set(self.index.get_value(("wanted", str(key)), ()))
        return found

    def _want(self, key: MetaKey, name: str) -> None:
        wanted = self.wanted(key)
        if name not in wanted:
            wanted.add(name)
            stored = set(self.index.get_value(("wanted", str(key)), ()))
            # A hint for later snapshots: a full disk (or index) must not fail this request.
            with contextlib.suppress(OSError):
                self.index.set_value(("wanted", str(key)), stored | wanted)

    async def ensure(
        self, key: MetaKey, entry: MetaEntry, name: str, *, asked: bool, head: bool
    ) -> MetaEntry | None:
        """The entry with variant `name`, made now if the snapshot is small; else None, with
        the variant under way in the background (unless only a HEAD asked). A HEAD gets what
        a GET would (RFC 9110 §9.3.2; mamba trusts a HEAD's 200): a small variant is made for
        it too, but only a GET marks it wanted or starts a big one."""
        if name in entry.variants:
            return entry
        source = entry.variants.get(MAKERS[name][0])
        if source is None:
            return None
        if asked and not head:
            self._want(key, name)
        if document_size(entry) <= BIG:
            return await self._make(key, entry, name)
        if not head:
            self.schedule(key, entry, name)
        return None

    async def materialise(self, key: MetaKey, entry: MetaEntry, name: str) -> MetaEntry:
        """The entry with variant `name`, made now whatever the snapshot's size (in the worker
        process when big), for a reader that cannot do without it; remade after each change
        from then on. Raises NotFound if the snapshot went away meanwhile."""
        for _ in range(3):
            if name in entry.variants:
                return entry
            self._want(key, name)
            made = await self._make(key, entry, name)
            if made is not None and name in made.variants:
                return made
            latest = self.index.get_meta(key)
            if latest is None:
                break
            entry = latest  # the snapshot moved on while the variant was made: its own
        raise NotFound(f"{key}: the snapshot changed while its {name} variant was made; retry")

    def after_change(self, key: MetaKey, entry: MetaEntry) -> None:
        """Remake what clients of this key asked for before, for its new snapshot."""
        for name in self.wanted(key):
            if name not in entry.variants and MAKERS[name][0] in entry.variants:
                self.schedule(key, entry, name)

    def schedule(self, key: MetaKey, entry: MetaEntry, name: str) -> None:
        task_key = (str(key), entry.digest, name)
        if task_key in self._tasks:
            return
        task = asyncio.create_task(self._background(key, entry, name))
        self._tasks[task_key] = task
        task.add_done_callback(lambda _: self._tasks.pop(task_key, None))

    async def _background(self, key: MetaKey, entry: MetaEntry, name: str) -> None:
        try:
            await self._make(key, entry, name)
        except Exception as exc:  # logged; a client asking again schedules it again
            log.warning(
                "derived variant failed", key=str(key), variant=name, error=f"{exc!r}"[:300]
            )

    async def _make(self, key: MetaKey, entry: MetaEntry, name: str) -> MetaEntry | None:
        """Make the variant once across workers, then add it to the entry, if the snapshot
        is still the one it was made from."""
        async with self.locks.hold(f"derive:{key}:{name}"):
            current = self.index.get_meta(key)
            if current is None or current.digest != entry.digest:
                return current if current is not None and name in current.variants else None
            if name in current.variants:
                return current
            source_name, make = MAKERS[name]
            source = self.meta.readable(key, current.variants[source_name])
            big = document_size(current) > BIG
            path, sha, size = await self.workers.run(big, make, str(source), str(self.meta.tmp_dir))
            return await self._adopt(key, entry.digest, name, path, Variant(sha, size))

    async def _adopt(
        self, key: MetaKey, digest: str, name: str, path: str, variant: Variant
    ) -> MetaEntry | None:
        async with self.locks.hold(key.lock):  # a moment: one rename and one index write
            current = self.index.get_meta(key)
            if current is None or current.digest != digest:
                os.unlink(path)  # the snapshot moved on while this was being made
                return None
            variant = dataclasses.replace(variant, stamp=placed_stamp(path))  # at_rest.py
            final = self.meta.store_for(key).place(path, variant.sha256)
            updated = dataclasses.replace(current, variants={**current.variants, name: variant})
            try:
                self.index.put_meta(key, updated)
            except BaseException:  # e.g. a full index: the file moved in is named by nothing
                if variant.sha256 not in {v.sha256 for v in current.variants.values()}:
                    final.unlink(missing_ok=True)
                raise
            log.info("derived variant ready", key=str(key), variant=name, bytes=variant.size)
        self.after_change(key, updated)  # what is wanted and made from this one (records)
        return updated

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
