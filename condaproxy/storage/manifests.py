"""Uploads shared by every replica: blobs and one manifest per channel in the bucket.

An upload is acknowledged only once it is durable in the bucket: its blob is written under
`uploads/cas/` first, then the channel's manifest is changed by compare-and-swap only, a PUT
with `If-Match: <etag>` (or `If-None-Match: *` for the first one), re-read and retried when
another replica won the race (412). Two replicas can therefore never lose each other's uploads.
The local UploadStore then adopts the manifest, so this replica reads its own write at once.

Other replicas learn of the change when they poll (`refresh`, at most every
`cluster.poll_interval` seconds: a conditional GET, a 304 while nothing changed). They copy the
new blobs into their own upload store, verified against the manifest's sha256 and size, before
they adopt the manifest: a replica never lists a package it cannot serve.

Blobs of deleted or replaced uploads stay in the bucket (an orphan sweep is future work):
nothing is ever deleted that a manifest might still name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import structlog

from ..rules.errors import NotFound, ServiceUnavailable
from ..rules.shadowing import same_file
from ..rules.shared_manifest import BadManifest, check_entry, check_subdir
from .blobs import TempBlob
from .layout import manifest_key, upload_blob_key
from .objectstore import CasNotHonoured, Doc, ObjectStore, Opened, StoreUnavailable
from .uploads import Upload, UploadStore, exists_already

log = structlog.get_logger("condaproxy.storage.manifests")

FORMAT = 1


class Manifest(msgspec.Struct):
    """`uploads/manifests/<channel>.json`: per subdir, a generation and the files."""

    format: int = FORMAT
    subdirs: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)

    def files(self, subdir: str) -> dict[str, Upload]:
        raw = self.subdirs.get(subdir, {}).get("files", {})
        return {name: msgspec.convert(body, Upload) for name, body in raw.items()}

    def generation(self, subdir: str) -> int:
        return int(self.subdirs.get(subdir, {}).get("generation", 0))

    def set_files(self, subdir: str, files: dict[str, Upload]) -> None:
        self.subdirs[subdir] = {
            "generation": self.generation(subdir) + 1,
            "files": {name: dataclasses.asdict(u) for name, u in files.items()},
        }


def decode(doc: Doc | None, channel: str) -> Manifest:
    """The manifest, or StoreUnavailable naming the object if it is not one this proxy wrote
    (uploads to that channel then wait: nothing is written over what cannot be read, and a
    replica keeps the manifest it adopted last). Every entry is checked as an upload through
    this proxy would be (rules/shared_manifest.py): its sha256 becomes a local path."""
    if doc is None:
        return Manifest()
    key = manifest_key(channel)
    try:
        manifest = msgspec.json.decode(doc.body, type=Manifest)
        for subdir, body in manifest.subdirs.items():
            check_subdir(subdir, body)
            for filename, upload in manifest.files(subdir).items():
                check_entry(channel, subdir, filename, upload)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, BadManifest) as exc:
        reason = str(exc)[:300]
        raise StoreUnavailable(f"{key} in shared storage is not a manifest: {reason}") from None
    return manifest


class SharedManifests:
    def __init__(
        self,
        store: ObjectStore,
        uploads: UploadStore,
        replica: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.uploads = uploads
        self.replica = replica
        self.clock = clock
        self.etags: dict[str, str] = {}  # channel -> ETag of the manifest adopted here
        self.cas_retries = 0
        self.probed = False
        self.changed: Callable[[str], None] | None = None  # told of each change made here

    # changes (called by UploadStore under its `uploads:<channel>` lock)

    async def add_all(self, staged: Sequence[tuple[Upload, TempBlob]], force: bool) -> list[Upload]:
        channel = staged[0][0].channel
        stamped = [dataclasses.replace(u, uploaded_at=self.clock()) for u, _ in staged]
        try:
            await self._ready()
            for upload, temp in staged:
                await self.store.put_file(upload_blob_key(upload.sha256), temp.path)

            def change(manifest: Manifest) -> None:
                for upload in stamped:
                    existing = same_file(manifest.files(upload.subdir), upload.filename)
                    if not force and existing is not None:
                        raise exists_already(channel, upload, existing)
                for subdir in {u.subdir for u in stamped}:
                    files = manifest.files(subdir)
                    for upload in (u for u in stamped if u.subdir == subdir):
                        files.pop(same_file(files, upload.filename) or upload.filename, None)
                        files[upload.filename] = upload
                    manifest.set_files(subdir, files)

            manifest, etag = await self._update(channel, change)
            for upload, temp in staged:
                await asyncio.to_thread(self.uploads.blobs.commit, temp, upload.sha256)
        except BaseException:
            for _, temp in staged:
                temp.discard()
            raise
        self._adopt(channel, manifest, etag)
        if self.changed is not None:
            self.changed(channel)
        return stamped

    async def delete(self, channel: str, subdir: str, filename: str) -> Upload:
        removed: list[Upload] = []

        def change(manifest: Manifest) -> None:
            files = manifest.files(subdir)
            # Names compare case-folded, as on upload; the exact name first (case variants
            # stored by an older version may coexist).
            stored = filename if filename in files else same_file(files, filename)
            if stored is None:
                raise NotFound(f"no upload {subdir}/{filename} in channel '{channel}'")
            removed[:] = [files.pop(stored)]
            manifest.set_files(subdir, files)

        await self._ready()
        manifest, etag = await self._update(channel, change)
        self._adopt(channel, manifest, etag)
        if self.changed is not None:
            self.changed(channel)
        return removed[0]

    async def _ready(self) -> None:
        """Conditional writes are checked once, before the first change (also at start-up)."""
        if self.probed:
            return
        try:
            await self.store.probe(self.replica)
        except CasNotHonoured as exc:
            raise ServiceUnavailable(f"uploads refused: 'storage.url' {exc}") from None
        self.probed = True

    async def _update(
        self, channel: str, change: Callable[[Manifest], None]
    ) -> tuple[Manifest, str]:
        """The channel's manifest changed by compare-and-swap (ObjectStore.update)."""
        key = manifest_key(channel)
        changed: list[Manifest] = []

        def apply(doc: Doc | None) -> bytes:
            manifest = decode(doc, channel)
            change(manifest)
            changed[:] = [manifest]
            return msgspec.json.encode(manifest)

        etag, races = await self.store.update(key, apply)
        self.cas_retries += races
        return changed[0], etag

    def _adopt(self, channel: str, manifest: Manifest, etag: str) -> None:
        # A subdir never leaves the manifest (emptied, it stays with its generation), so the
        # subdirs it names are all there is to compare.
        for subdir in manifest.subdirs:
            generation = manifest.generation(subdir)
            if generation != self.uploads.generation(channel, subdir):
                self.uploads.adopt(channel, subdir, manifest.files(subdir), generation)
        self.etags[channel] = etag

    # learning of other replicas' changes

    async def refresh(self, channel: str) -> bool:
        """Adopt the bucket's manifest of `channel` if it changed; True if it did. Raises
        StoreUnavailable when the store cannot be asked."""
        seen = self.etags.get(channel)
        doc = await self.store.get_doc(manifest_key(channel), if_none_match=seen)
        if doc is None or (seen is not None and doc.etag == seen and not doc.body):
            return False
        manifest = decode(doc, channel)
        for subdir in manifest.subdirs:
            for upload in manifest.files(subdir).values():
                await self._fetch_blob(upload)
        async with self.uploads.locks.hold(f"uploads:{channel}"):
            if self.etags.get(channel) != seen:
                return False  # a change of our own was adopted meanwhile: it is newer
            self._adopt(channel, manifest, doc.etag)
        log.info("uploads changed on another replica", channel=channel)
        return True

    async def _fetch_blob(self, upload: Upload) -> None:
        """Copy an uploaded blob into the local upload store, verified, if it is not there.
        The manifest's size bounds the copy: an object announced at another size is refused
        before a byte is read, and one that turns out longer than it said is cut off at the
        first byte too many, never written past the manifest's size."""
        blobs = self.uploads.blobs
        if blobs.exists(upload.sha256):
            return
        opened = await self.store.open(upload_blob_key(upload.sha256))
        if opened is None:
            raise StoreUnavailable(f"uploaded blob {upload.sha256} is missing from the bucket")
        try:
            if opened.size != upload.size:
                raise StoreUnavailable(
                    f"uploaded blob {upload.sha256} in the bucket is {opened.size} bytes, "
                    f"the manifest says {upload.size}: not copied"
                )
            await self._copy_blob(upload, opened)
        finally:
            opened.close()

    async def _copy_blob(self, upload: Upload, opened: Opened) -> None:
        blobs = self.uploads.blobs
        temp = blobs.new_temp()
        try:
            sha, size = hashlib.sha256(), 0
            async for chunk in opened.iter_bytes(limit=upload.size):
                size += len(chunk)
                if size > upload.size:
                    raise StoreUnavailable(
                        f"uploaded blob {upload.sha256} in the bucket is longer than the "
                        f"{upload.size} bytes its manifest and its length say: not copied"
                    )
                await asyncio.to_thread(temp.write, chunk)
                sha.update(chunk)
            if sha.hexdigest() != upload.sha256 or size != upload.size:
                raise StoreUnavailable(
                    f"uploaded blob {upload.sha256} in the bucket is corrupt "
                    f"(sha256 {sha.hexdigest()}, {size} bytes)"
                )
            await asyncio.to_thread(blobs.commit, temp, upload.sha256)
        except BaseException:
            temp.discard()
            raise
