"""What may stand at a path the store owns, whatever a crash, a careless hand or an attacker
with access to the disk left there.

A stored file is a regular file the proxy wrote, nothing else: a directory, a symbolic link (to
`/etc/passwd`, to another blob, to nothing), a fifo, a socket or a device at its path is never
read, never served and never waited on (opening one never follows a link and never blocks), and
it is cleared like any damaged file. Every directory of the layout is the proxy's too: a file
where one should be is removed, and the directory made again, so the cache mends itself rather
than failing every request that passes through it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

# O_NOFOLLOW: a link is never followed out of (or around in) the store. O_NONBLOCK: opening a
# fifo for reading does not wait for a writer that never comes (no effect on a regular file).
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotAFile(OSError):
    """A store path holds something other than a regular file."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def open_regular(path: str | Path) -> int:
    """A read-only descriptor on the regular file at `path`: FileNotFoundError when nothing is
    there, NotAFile when something else is."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENODEV):  # a link, a socket, a device
            raise NotAFile(exc.errno, f"not a file: {_what(path)}", str(path)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotAFile(errno.EISDIR, f"not a file: {_kind(mode)}", str(path))
    return fd


def _what(path: str | Path) -> str:
    try:
        return _kind(os.lstat(path).st_mode)
    except OSError:
        return "gone"


def is_regular(path: str | Path) -> bool:
    """Whether a regular file (not a link to one) stands at `path`."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_entry(path: str | Path) -> int:
    """Remove whatever stands at `path` (a file, a link, a fifo, a whole directory); the size
    of the regular file removed (0 for anything else, or nothing)."""
    try:
        found = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    if stat.S_ISDIR(found.st_mode):
        shutil.rmtree(path, ignore_errors=True)
        return 0
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return found.st_size if stat.S_ISREG(found.st_mode) else 0


def ensure_dir(path: Path, root: Path) -> None:
    """Make directory `path` (inside `root`, which must exist or be makeable), removing any
    non-directory (a link to a directory included) that stands where it or a directory between
    it and `root` should."""
    parts = path.relative_to(root).parts
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A symbolic link to a directory passes mkdir: writes (and eviction's deletes) would
        # happen wherever it points. Only the link is removed below, never what it points at.
        if not any(os.path.islink(root.joinpath(*parts[: i + 1])) for i in range(len(parts))):
            return
    except (FileExistsError, NotADirectoryError):
        pass
    root.mkdir(parents=True, exist_ok=True)
    at = root
    for part in parts:
        at = at / part
        try:
            if stat.S_ISDIR(os.lstat(at).st_mode):
                continue
            os.unlink(at)  # a file, a link, a fifo where our directory belongs
        except FileNotFoundError:
            pass
        at.mkdir(exist_ok=True)


def place(source: str | Path, final: Path, root: Path) -> None:
    """Rename `source` to `final` (under `root`), replacing whatever stands there: a stale
    file, or a directory, link or fifo put in its way; the directories up to it are made
    (again) as needed. A full disk (or any other failure) is raised, `source` left as it was."""
    try:
        os.replace(source, final)
        return
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        pass
    ensure_dir(final.parent, root)
    if os.path.lexists(final) and not is_regular(final):
        remove_entry(final)
    os.replace(source, final)


# Creating never follows a link either: one planted at a lock, marker or temp path would have
# the proxy (often root) create, truncate or lock a file wherever it points.
CREATE_FLAGS = os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def open_own(path: str | Path, flags: int = os.O_RDWR) -> int:
    """A descriptor on the regular file at `path`, made if missing (a lock, a marker): a link,
    directory, fifo or socket in its place is removed (only it, never what a link points at)
    and a file made instead. FileNotFoundError when its directory is gone."""
    return _own(path, flags | CREATE_FLAGS)


def create_new(path: str | Path) -> int:
    """A new empty file at `path` (a temp name), opened for writing: whatever stood there is
    removed first, and the file is made exclusively (never through a link, nor an existing
    file another name shares)."""
    return _own(path, os.O_WRONLY | os.O_EXCL | CREATE_FLAGS, fresh=True)


def _own(path: str | Path, flags: int, fresh: bool = False) -> int:
    for attempt in range(3):
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            found = None
        if found is not None and (fresh or not stat.S_ISREG(found.st_mode)):
            remove_entry(path)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            # ELOOP: a link put there since; EEXIST: anything, for an exclusive create;
            # EISDIR, ENXIO: a directory, a fifo or socket.
            if attempt < 2 and exc.errno in (errno.ELOOP, errno.EEXIST, errno.EISDIR, errno.ENXIO):
                continue
            raise
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)  # a fifo opened for reading and writing
        remove_entry(path)
    raise NotAFile(errno.EEXIST, "not a file, again and again", str(path))
