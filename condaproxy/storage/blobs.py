"""Content-addressed blob storage on the local filesystem.

Crash-safe writes: bytes go to `tmp/<random>.partial` (whose writer holds an flock on it),
are verified, fsynced and atomically renamed to `<root>/<aa>/<bb>/<sha256>`; the directory is
fsynced too. A start-up sweep deletes temp files nobody holds, so a kill -9 leaves nothing
half-written behind, even with several workers sharing the directory.

Reads trust nothing this process did not write: `open_checked` refuses a blob whose size is
not the recorded one, and hashes a blob before its first use in this process (what a crash, a
careless copy or bit rot left in the directory never goes out under its name). What was checked
is remembered with the file's inode and mtime, which every open compares: a blob written over in
place while the proxy runs (`dd conv=notrunc`, an editor, another program's bug) is hashed again
before it is served. Nothing here changes a blob's mtime (eviction records use in its atime).
A blob is a regular file: anything else at its path (entries.py) is damaged, and is cleared as
such.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .entries import (
    NotAFile,
    ensure_dir,
    is_regular,
    open_own,
    open_regular,
    place,
    remove_entry,
)


class NotChecked(Exception):
    """The blob must be hashed before it is used, and the caller asked not to wait for that."""


class DamagedBlob(Exception):
    """A stored blob is not what its name promises (its size or its sha256)."""

    def __init__(self, sha256: str, why: str) -> None:
        super().__init__(f"blob {sha256} is damaged: {why}")
        self.sha256, self.why = sha256, why


@dataclass
class TempBlob:
    """An open temp file whose flock marks it as in use."""

    path: Path
    fd: int

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.close()


class BlobStore:
    """put-by-hash (via TempBlob + commit), open, exists, delete, iterate."""

    def __init__(self, root: Path, tmp_dir: Path, anchor: Path | None = None) -> None:
        """`anchor`: the directory inside which whatever stands in the way of `root` and
        `tmp_dir` may be cleared (by default their parent: the cache directory)."""
        self.root = root
        self.anchor = root.parent if anchor is None else anchor
        self._root = str(root)
        self.tmp_dir = tmp_dir
        self._dirs: set[str] = set()  # fan-out directories known to exist
        # The blobs this process has checked: digest (bytes: half the memory of hex strings,
        # for caches of hundreds of thousands of files) -> the checked file's stamp.
        self._verified: dict[bytes, int] = {}
        ensure_dir(root, self.anchor)
        ensure_dir(tmp_dir, tmp_dir.parent)

    def path_for(self, sha256: str) -> Path:
        return Path(self.location(sha256))

    def location(self, sha256: str) -> str:
        """The blob's path as a string: cheaper than pathlib on the hit path."""
        return f"{self._root}/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def exists(self, sha256: str) -> bool:
        return is_regular(self.location(sha256))

    def open(self, sha256: str) -> int:
        """An O_RDONLY descriptor; raises FileNotFoundError if the blob is gone, DamagedBlob
        if something other than a file stands in its place."""
        try:
            return open_regular(self.location(sha256))
        except NotADirectoryError:  # a file where a fan-out directory belongs: no blob
            raise FileNotFoundError(self.location(sha256)) from None
        except NotAFile as exc:
            raise DamagedBlob(sha256, exc.strerror or "not a file") from None

    def open_checked(self, sha256: str, size: int, may_hash: bool = True) -> int:
        """An O_RDONLY descriptor on a blob of exactly `size` bytes whose content this
        process has checked against its name, as the file is now: FileNotFoundError if it is
        gone, DamagedBlob otherwise. The first use after start-up, and the first after the
        file changed in place, hashes it (blocking: call it in a thread); with
        may_hash=False that raises NotChecked instead (the caller on the event loop then
        comes back in a thread)."""
        fd = self.open(sha256)
        try:
            st = os.fstat(fd)
            if st.st_size != size:
                raise DamagedBlob(sha256, f"{st.st_size} bytes where {size} were stored")
            digest = _digest(sha256)
            if self._verified.get(digest) != stamp_of(st):
                if not may_hash:
                    raise NotChecked(sha256)
                if sha256_of_fd(fd) != sha256:
                    self._verified.pop(digest, None)
                    raise DamagedBlob(sha256, "its bytes do not match its sha256")
                self._verified[digest] = stamp_of(st)  # as it was before it was read
        except BaseException:
            os.close(fd)
            raise
        return fd

    def is_checked(self, sha256: str) -> bool:
        """Whether this process has checked the blob (as it was then: see open_checked)."""
        return _digest(sha256) in self._verified

    def discard_damaged(self, sha256: str) -> None:
        """Delete a damaged blob. Should another worker have just renamed a good copy over
        it, that copy goes too: its entry then finds no blob, which is a miss (never bad
        bytes)."""
        self._verified.pop(_digest(sha256), None)
        remove_entry(self.location(sha256))

    def delete(self, sha256: str) -> int:
        """Remove the blob (or whatever stands in its place); the bytes freed."""
        return remove_entry(self.location(sha256))

    def iterate(self) -> Iterator[tuple[str, int]]:
        for sha, size, _ in self.usage():
            yield sha, size

    def usage(self) -> Iterator[tuple[str, int, float]]:
        """Every blob: its name, size and last use (atime: eviction's order). One stat per
        blob (scandir): the store of a conda-forge mirror holds hundreds of thousands."""
        for first in _subdirs(self._root):
            for second in _subdirs(first):
                try:
                    entries = list(os.scandir(second))
                except OSError:  # gone meanwhile, or no directory
                    continue
                for entry in entries:
                    try:
                        if entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            yield entry.name, st.st_size, st.st_atime
                    except OSError:
                        continue

    def drop_least_recent(self) -> int:
        """Delete the least recently used blob (the oldest atime: eviction's order); its
        size, or 0 if the store is empty."""
        oldest = min(((used, sha) for sha, _, used in self.usage()), default=None)
        return 0 if oldest is None else self.delete(oldest[1])

    def new_temp(self) -> TempBlob:
        return new_temp(self.tmp_dir)

    def commit(self, temp: TempBlob, sha256: str, close: bool = True) -> Path:
        """fsync the bytes, rename into place, fsync the directory; the blob is then durable.
        With close=False the descriptor stays open for readers tailing it."""
        os.fsync(temp.fd)
        final = self.place(temp.path, sha256)
        _fsync_dir(final.parent)
        self._verified[_digest(sha256)] = stamp_of(os.fstat(temp.fd))  # the writer checked them
        if close:
            temp.close()
        return final

    def place(self, source: str | Path, sha256: str) -> Path:
        """Rename the file `source` to the blob's path, replacing whatever stands there (a
        directory or a fan-out directory gone, a file where one belongs: entries.py)."""
        final = self.path_for(sha256)
        if str(final.parent) not in self._dirs:
            ensure_dir(final.parent, self.anchor)
            self._dirs.add(str(final.parent))
        try:
            place(source, final, self.anchor)
        except BaseException:
            self._dirs.discard(str(final.parent))
            raise
        return final

    def put_bytes(self, data: bytes | bytearray, sha256: str) -> Path:
        temp = self.new_temp()
        try:
            temp.write(data)
            return self.commit(temp, sha256)
        except BaseException:
            temp.discard()
            raise


def _subdirs(path: str) -> list[str]:
    """The fan-out directories below `path` (two hex characters each), never through a link."""
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def new_temp(tmp_dir: Path) -> TempBlob:
    """A fresh temp file in `tmp_dir`, flock-held by its writer (the sweep skips it)."""
    path = tmp_dir / f"{secrets.token_hex(12)}.partial"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except (FileNotFoundError, NotADirectoryError):  # removed, or a file in its place
        ensure_dir(tmp_dir, tmp_dir.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return TempBlob(path, fd)


def stamp_of(st: os.stat_result) -> int:
    """The file as it was checked: its inode and its mtime (a write in place moves the mtime;
    a copy renamed over the blob is another inode), folded into one int to keep the memory.
    The same in every worker (ints hash alike in every process): never 0."""
    return hash((st.st_ino, st.st_mtime_ns)) or 1


def placed_stamp(path: str | Path) -> int:
    """The stamp a file about to be renamed into the store will have there (a rename keeps
    the inode and the mtime): what its writer records (storage/index.Variant.stamp)."""
    return stamp_of(os.stat(path))


def _digest(sha256: str) -> bytes:
    try:
        return bytes.fromhex(sha256)
    except ValueError:  # not a hex name: never one this process checked
        return sha256.encode()


def sha256_of_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_temp_files(tmp_dir: Path) -> int:
    """Delete temp files whose writer is gone (no flock held). Returns how many. Only what
    the proxy names a temp file (`*.partial`) and is a file is considered: anything else
    someone left there is not ours to delete."""
    removed = 0
    if not tmp_dir.is_dir():
        return 0
    for path in tmp_dir.iterdir():
        if not path.name.endswith(".partial"):
            continue
        try:
            fd = open_regular(path)  # never a link, never waiting on a fifo
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer (maybe another worker) holds it
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class Liveness:
    """A shared flock every process on the cache holds for its lifetime. A process that can
    take it exclusively is the only one alive: only then may it sweep temp files, since a
    live process's finished-but-not-yet-adopted files are no longer flock-held."""

    def __init__(self, path: Path) -> None:
        self.fd = open_own(path)

    def alone(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def share(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def close(self) -> None:
        os.close(self.fd)
