"""Pure rules for a package's members taken together: the links of one package, followed
through each other, must stay inside it; a hardlink names a file stored before it in its
tarball; no member hides under a symlinked directory; each name once. No I/O.

Packages are unpacked on case-insensitive, normalisation-insensitive file systems too (macOS,
Windows), where `a/u` is the symlink `a/U` and `é` decomposed is `é` precomposed. So a path
that reaches a symlink under another case or normal form (`folded`) is refused rather than
followed one way or the other, and no member may sit under a symlink in any case: otherwise
links harmless on Linux could, on a Mac, climb out of the environment and be written through.
Members that differ only in case are accepted (Linux packages hold them: terminfo's `E/`, `e/`).
"""

from __future__ import annotations

import bisect
import posixpath
import re
import tarfile
import unicodedata
from dataclasses import dataclass, field

from .archive import (
    MAX_LINK_HOPS,
    MAX_LINK_STEPS,
    MAX_PATH,
    InvalidPackage,
    check_member_name,
    member_kind,
)


@dataclass
class PackageTree:
    """Every member of a package (both tarballs of a .conda extract into one prefix), checked
    as a whole once all are known: a symlink may be defined after a member that uses it."""

    names: set[str] = field(default_factory=set)  # every member but directories, once each
    paths: list[str] = field(default_factory=list)  # every member, directories too
    symlinks: dict[str, str] = field(default_factory=dict)
    _files_in_tar: set[str] = field(default_factory=set)

    def new_tarball(self) -> None:
        """Hardlinks refer to an earlier member of the same tarball."""
        self._files_in_tar = set()

    def add(self, member: tarfile.TarInfo) -> tuple[str, str]:
        """(path, kind) of a member, refused if it could escape or collides with another."""
        path = check_member_name(member.name)
        kind = member_kind(member)
        if not path:
            if kind == "directory":
                return path, kind  # the root itself (`./`)
            raise InvalidPackage(f"archive member {member.name!r} has no name", member=member.name)
        self.paths.append(path)
        if kind != "directory":
            if path in self.names:
                raise InvalidPackage(
                    f"archive member {path!r} appears twice (a later copy would replace the "
                    "first when unpacked)",
                    member=path,
                )
            self.names.add(path)
        if kind == "symlink":
            self._symlink(path, member.linkname)
        elif kind == "hardlink":
            self._hardlink(path, member.linkname)
        elif kind == "file":
            self._files_in_tar.add(path)
        return path, kind

    def _symlink(self, path: str, target: str) -> None:
        if not target or "\x00" in target or len(target) > MAX_PATH:
            raise InvalidPackage(f"symlink {path!r} has an invalid target", member=path)
        if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
            raise InvalidPackage(
                f"symlink {path!r} points at the absolute path {target!r}, outside the package",
                member=path,
            )
        self.symlinks[path] = target.replace("\\", "/")

    def _hardlink(self, path: str, target: str) -> None:
        try:
            inside = check_member_name(target)
        except InvalidPackage:
            raise InvalidPackage(
                f"hardlink {path!r} points at {target!r}, outside the package", member=path
            ) from None
        if inside not in self._files_in_tar:
            raise InvalidPackage(
                f"hardlink {path!r} points at {target!r}, which is not a file stored before it "
                "in the package",
                member=path,
            )

    def finish(self) -> None:
        """Follow every symlink through the others; refuse any that leaves the package, and any
        member stored under a symlinked directory."""
        if not self.symlinks:
            return
        walk = _LinkWalk(self.symlinks)
        for path, target in self.symlinks.items():
            parent = posixpath.dirname(path)
            if not walk.stays_inside(f"{parent}/{target}" if parent else target):
                raise InvalidPackage(
                    f"symlink {path!r} -> {target!r} points outside the package (or loops, or "
                    "passes a symlink named in another case or Unicode form)",
                    member=path,
                )
        # Members under `<link>/` (in any case) sort right after it: one binary search each.
        ordered = sorted((folded(p), p) for p in self.paths)
        for link in self.symlinks:
            under = folded(link) + "/"
            i = bisect.bisect_left(ordered, (under, ""))
            if i < len(ordered) and ordered[i][0].startswith(under):
                raise InvalidPackage(
                    f"archive member {ordered[i][1]!r} is stored under the symlink {link!r}",
                    member=ordered[i][1],
                )


class _LinkWalk:
    """Resolves paths inside the package through its symlinks, as the OS would once unpacked;
    all walks of one package share a step budget, so crafted links cannot cost quadratic time."""

    def __init__(self, symlinks: dict[str, str], steps: int = MAX_LINK_STEPS) -> None:
        self.symlinks = symlinks
        self.steps = steps
        self.folded = {folded(path) for path in symlinks}

    def stays_inside(self, path: str) -> bool:
        """False if `path` (relative to the package root) climbs out of it or loops."""
        prefixes: list[str] = []  # prefixes[i]: the first i + 1 resolved components, joined
        pending = _components(path)
        hops = 0
        while pending:
            self.steps -= 1
            if self.steps < 0:
                raise InvalidPackage("the package's symlinks take too many steps to follow")
            part = pending.pop()
            if part == "..":
                if not prefixes:
                    return False
                prefixes.pop()
                continue
            candidate = f"{prefixes[-1]}/{part}" if prefixes else part
            if len(candidate) > MAX_PATH:
                return False
            target = self.symlinks.get(candidate)
            if target is None:
                key = candidate.lower() if candidate.isascii() else folded(candidate)
                if key in self.folded:
                    return False  # a symlink on some disks, a directory on others
                prefixes.append(candidate)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS or target.startswith("/"):
                return False
            pending.extend(_components(target))
        return True


def folded(path: str) -> str:
    """A path as a case- and normalisation-insensitive file system compares it (for ASCII,
    its lowercase)."""
    if path.isascii():
        return path.lower()
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", path).casefold())


def _components(path: str) -> list[str]:
    """The path's components, last first (a stack)."""
    return [p for p in reversed(path.split("/")) if p not in ("", ".")]


# --- the .conda container ---------------------------------------------------------------------
