"""Uploaded packages: durable, never evicted, safe under concurrent uploads and kill -9.

Blobs live in their own content-addressed store (cache purges and eviction never touch it).
Each (channel, subdir) has a manifest {filename: Upload} in a diskcache of its own, changed only
under a cross-process lock, after the blob is durable. A generation counter per (channel,
subdir) moves with every change, so merged repodata knows when to be recomputed. A full disk
(or index) refuses an upload whole: nothing recorded, no blob left.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import itertools
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..rules.errors import NotFound, ProxyError
from ..rules.names import hashed_name
from ..rules.shadowing import same_file
from .blobs import BlobStore, TempBlob
from .entries import create_new, ensure_dir, is_regular, open_own
from .locks import KeyedLocks, release
from .sqlite_disk import disk_errors
from .upload_index import UploadIndex

# Blobs are shared by every channel's manifests: a blob is made durable and named by its
# manifest, or looked up in every manifest and deleted, under this one lock (not a channel's),
# so that no worker deletes a blob another has committed but not named yet.
BLOBS_LOCK = "upload-blobs"
_temp_ids = itertools.count()


class Conflict(ProxyError):
    status = 409


def exists_already(channel: str, upload: Upload, existing: str) -> Conflict:
    """The 409 for an upload whose file exists (`existing`: the same name, or its case
    variant)."""
    also = "" if existing == upload.filename else f" as {existing} (names compare case-folded)"
    return Conflict(
        f"{upload.subdir}/{upload.filename} already exists in channel '{channel}'{also}; "
        "upload with force=true to replace it"
    )


class SharedRecorder(Protocol):
    """Records uploads in the shared bucket first (manifests.py), then adopts them locally."""

    async def add_all(
        self, staged: Sequence[tuple[Upload, TempBlob]], force: bool
    ) -> builtins.list[Upload]: ...

    async def delete(self, channel: str, subdir: str, filename: str) -> Upload: ...


@dataclass(frozen=True)
class Upload:
    channel: str
    subdir: str
    filename: str
    sha256: str
    size: int
    uploaded_at: float
    uploaded_by: str
    record: dict[str, Any]

    def listing(self) -> dict[str, Any]:
        return {
            "name": self.record["name"],
            "version": self.record["version"],
            "build": self.record["build"],
            "subdir": self.subdir,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "uploaded_at": self.uploaded_at,
            "uploaded_by": self.uploaded_by,
        }


def damaged_index(root: Path) -> str | None:
    """Why the upload index under `root` (cache/uploads) is no usable SQLite database, or None
    (absent, fine, or merely locked or on a full disk). It is the only record of the uploads:
    never set aside or rebuilt empty, which would let the upstream's files of their names
    through; `serve` refuses to start on it instead, with one line."""
    db = (root / "index" / "cache.db").absolute()  # a file: URI needs an absolute path, and
    if not os.path.lexists(db):  # cache.path is relative as shipped (./cache)
        return None
    if not is_regular(db) or os.path.islink(db.parent):
        return "it is not a regular file in a directory of the cache's own (a link?)"
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            found = con.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.OperationalError:
        # Locked, or the disk cannot take the read's shared-memory file (full): not known to
        # be damaged. Opening it for real then makes room or says what failed.
        return None
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if found is not None and found[0] == "ok" else str(found and found[0])


class UploadStore:
    def __init__(
        self,
        root: Path,
        tmp_dir: Path,
        locks: KeyedLocks,
        clock: Callable[[], float] = time.time,
        make_room: Callable[[], bool] | None = None,
    ) -> None:
        self.blobs = BlobStore(root / "blobs", tmp_dir, anchor=root.parent)
        self._markers = root / "changed"
        self._anchor = root.parent
        ensure_dir(self._markers, self._anchor)
        self._db = UploadIndex(root / "index", make_room or (lambda: False))
        self.locks = locks
        self.clock = clock
        self._marker_paths: dict[tuple[str, str], str] = {}
        self._manifests: dict[tuple[str, str], tuple[tuple[int, int, int], dict[str, Upload]]] = {}
        self._subdirs: dict[str, tuple[tuple[int, int, int], list[str]]] = {}
        # With [storage], the bucket's manifests are the truth and this store their local copy:
        # changes go through `shared` (manifests.py), which then adopts them here.
        self.shared: SharedRecorder | None = None

    def close(self) -> None:
        self._db.close()

    def manifest(self, channel: str, subdir: str) -> dict[str, Upload]:
        value: dict[str, Upload] = self._db.get(("manifest", channel, subdir), {})
        return value

    def subdirs(self, channel: str) -> list[str]:
        """The channel's subdirs with uploads. Every package and shard request asks (are there
        uploads to overlay?), so this sits on the hit and miss paths: as for manifests, a
        stat of the channel's marker (replaced after every change of its subdirs, by any
        worker) says whether the copy held in memory is still current."""
        token = self._marker_token(self._channel_marker(channel))
        if token is None:
            return self._read_subdirs(channel)
        cached = self._subdirs.get(channel)
        if cached is not None and cached[0] == token:
            return cached[1]
        found = self._read_subdirs(channel)
        self._subdirs[channel] = (token, found)
        return found

    def _marker_token(self, marker: str) -> tuple[int, int, int] | None:
        """What identifies the marker's current version; None when there is none to be had
        (a full disk): the caller then reads the index, as if it had changed.

        No marker (none since this version, or the directory removed or replaced behind the
        proxy's back): one is laid down, so the next change replaces it, created before
        reading, never after. Its absence never means "no uploads": uploaded names would
        then stop hiding the upstream's."""
        try:
            st = os.lstat(marker)  # a link in its place is no marker: one is laid down
            if not stat.S_ISREG(st.st_mode):
                raise FileNotFoundError(marker)
        except (FileNotFoundError, NotADirectoryError):
            try:
                ensure_dir(self._markers, self._anchor)
                os.close(open_own(marker, os.O_WRONLY))
                st = os.lstat(marker)
            except OSError:
                return None
        return (st.st_ino, st.st_mtime_ns, self._db.generation)  # a restored index: re-read

    def _read_subdirs(self, channel: str) -> list[str]:
        return sorted(self._db.get(("subdirs", channel), set()))

    def _channel_marker(self, channel: str) -> str:
        path = self._marker_paths.get((channel, ""))
        if path is None:
            name = hashed_name(f"channel:{channel}")
            path = self._marker_paths[(channel, "")] = os.path.join(self._markers, name)
        return path

    def changes(self, channel: str) -> tuple[tuple[int, int, int] | None, ...]:
        """What identifies the channel's uploads as they are now (its markers, each replaced
        on every change by any worker): equal while nothing was uploaded or deleted. A stat per
        subdir, no read of the index."""
        subdirs = self.subdirs(channel)
        markers = [self._channel_marker(channel), *(self._marker(channel, s) for s in subdirs)]
        return tuple(self._marker_token(m) for m in markers)

    def generation(self, channel: str, subdir: str) -> int:
        return int(self._db.get(("generation", channel, subdir), 0))

    def get(self, channel: str, subdir: str, filename: str) -> Upload | None:
        return self.current(channel, subdir).get(filename)

    def _marker(self, channel: str, subdir: str) -> str:
        path = self._marker_paths.get((channel, subdir))
        if path is None:
            name = hashed_name(f"{channel}/{subdir}")
            path = self._marker_paths[(channel, subdir)] = os.path.join(self._markers, name)
        return path

    def current(self, channel: str, subdir: str) -> dict[str, Upload]:
        """The manifest, re-read only when it changed. Package requests check uploads first,
        so this sits on the hit path: a stat of the subdir's marker file (replaced on every
        change, by any worker) tells whether the copy held in memory is still current."""
        token = self._marker_token(self._marker(channel, subdir))
        if token is None:
            return self.manifest(channel, subdir)
        cached = self._manifests.get((channel, subdir))
        if cached is not None and cached[0] == token:
            return cached[1]
        manifest = self.manifest(channel, subdir)
        self._manifests[(channel, subdir)] = (token, manifest)
        return manifest

    def list(self, channel: str) -> list[Upload]:
        return [u for s in self.subdirs(channel) for u in self.manifest(channel, s).values()]

    async def add(self, upload: Upload, temp: TempBlob, force: bool) -> Upload:
        """Make the blob durable, then record it; refuse to replace without `force`."""
        (stored,) = await self.add_all([(upload, temp)], force)
        return stored

    async def add_all(
        self, staged: Sequence[tuple[Upload, TempBlob]], force: bool
    ) -> builtins.list[Upload]:
        """Record every upload of one request, or none: without `force`, any name that
        exists already refuses them all (409) before a single one is recorded. The temp files
        are discarded on refusal."""
        if not staged:
            return []
        channel = staged[0][0].channel
        async with self.locks.hold(f"uploads:{channel}"):
            if self.shared is not None:
                return await self.shared.add_all(staged, force)
            if not force:
                for upload, _ in staged:
                    existing = same_file(self.manifest(channel, upload.subdir), upload.filename)
                    if existing is not None:
                        for _, temp in staged:
                            temp.discard()
                        raise exists_already(channel, upload, existing)
            async with self.locks.hold(BLOBS_LOCK):
                return self._record(channel, staged)

    def _record(
        self, channel: str, staged: Sequence[tuple[Upload, TempBlob]]
    ) -> builtins.list[Upload]:
        """Make every blob durable, then name them all in one write of the manifests. If the
        disk or the index cannot take it, nothing is recorded and the blobs committed here
        that no manifest names are deleted again."""
        before = {s: self.manifest(channel, s) for s in {u.subdir for u, _ in staged}}
        after = {s: dict(files) for s, files in before.items()}
        stored, committed = [], []
        try:
            for upload, temp in staged:
                existed = self.blobs.exists(upload.sha256)
                self.blobs.commit(temp, upload.sha256)
                if not existed:
                    committed.append(upload.sha256)
                upload = dataclasses.replace(upload, uploaded_at=self.clock())
                files = after[upload.subdir]
                files.pop(same_file(files, upload.filename) or upload.filename, None)
                files[upload.filename] = upload
                stored.append(upload)
            self._write_all(channel, after)
        except BaseException:
            referenced = self._referenced()
            for sha in committed:
                if sha not in referenced:
                    self.blobs.delete(sha)
            raise
        for subdir, files in before.items():
            for replaced in files.values():
                if replaced.sha256 not in {u.sha256 for u in after[subdir].values()}:
                    self._delete_blob_if_unused(replaced.sha256)
        return stored

    async def delete(self, channel: str, subdir: str, filename: str) -> Upload:
        async with self.locks.hold(f"uploads:{channel}"):
            if self.shared is not None:
                return await self.shared.delete(channel, subdir, filename)
            manifest = self.manifest(channel, subdir)
            # Names compare case-folded, as on upload; the exact name first (case variants
            # stored by an older version may coexist).
            stored = filename if filename in manifest else same_file(manifest, filename)
            if stored is None:
                raise NotFound(f"no upload {subdir}/{filename} in channel '{channel}'")
            removed = manifest.pop(stored)
            self._write(channel, subdir, manifest)
            async with self.locks.hold(BLOBS_LOCK):
                self._delete_blob_if_unused(removed.sha256)
            return removed

    def adopt(self, channel: str, subdir: str, files: dict[str, Upload], generation: int) -> None:
        """Take a subdir's manifest as the shared bucket has it (its blobs are already here),
        generation included, so every replica names the same merged repodata the same way."""
        before = self.manifest(channel, subdir)
        self._write(channel, subdir, files, generation)
        for gone in {u.sha256 for u in before.values()} - {u.sha256 for u in files.values()}:
            self._delete_blob_if_unused(gone)

    def _write(
        self,
        channel: str,
        subdir: str,
        manifest: dict[str, Upload],
        generation: int | None = None,
    ) -> None:
        self._write_all(channel, {subdir: manifest}, generation)

    def _write_all(
        self,
        channel: str,
        manifests: dict[str, dict[str, Upload]],
        generation: int | None = None,
    ) -> None:
        """Replace the manifests of `channel`'s subdirs in one transaction, then tell every
        worker. The markers are made first: after the transaction nothing needs a byte of
        disk, so a full disk refuses the change whole or lets it through whole."""
        markers = [self._new_marker(channel, subdir) for subdir in manifests]
        markers.append(self._new_marker_at(self._channel_marker(channel)))
        try:
            with disk_errors(), self._db.transact():
                subdirs = set(self._db.get(("subdirs", channel), set()))
                for subdir, manifest in manifests.items():
                    self._db.set(("manifest", channel, subdir), manifest)
                    if manifest:
                        subdirs.add(subdir)
                    else:
                        subdirs.discard(subdir)
                    if generation is None:
                        self._db.incr(("generation", channel, subdir), default=0)
                    else:
                        self._db.set(("generation", channel, subdir), generation)
                self._db.set(("subdirs", channel), subdirs)
        except BaseException:
            for temp, _ in markers:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            raise
        for temp, marker in markers:
            os.replace(temp, marker)  # a new inode: every worker's stat sees the change

    def _new_marker(self, channel: str, subdir: str) -> tuple[str, str]:
        """An empty file to rename over the subdir's marker (an inode, no data blocks)."""
        return self._new_marker_at(self._marker(channel, subdir))

    def _new_marker_at(self, marker: str) -> tuple[str, str]:
        temp = f"{marker}.{os.getpid()}.{next(_temp_ids)}.tmp"  # unique: writes may overlap
        try:
            os.close(create_new(temp))
        except (FileNotFoundError, NotADirectoryError):  # removed, or a file in its place
            ensure_dir(self._markers, self._anchor)
            os.close(create_new(temp))
        return temp, marker

    def _referenced(self) -> set[str]:
        refs = set()
        for key in self._db.iterkeys():
            if isinstance(key, tuple) and key[0] == "manifest":
                refs |= {u.sha256 for u in self._db.get(key, {}).values()}
        return refs

    def _delete_blob_if_unused(self, sha256: str) -> None:
        if sha256 not in self._referenced():
            self.blobs.delete(sha256)

    def sweep_orphans(self) -> int:
        """Blobs no manifest names (a kill -9 between commit and manifest write). Skipped while
        another worker records an upload: its blob is named by no manifest yet."""
        fd = self.locks.try_acquire(BLOBS_LOCK)
        if fd is None:
            return 0
        try:
            refs = self._referenced()
            blobs = list(self.blobs.iterate())
            return sum(1 for sha, _ in blobs if sha not in refs and self.blobs.delete(sha))
        finally:
            release(fd)
