"""Which directories may hold the cache (pure: the caller lists and resolves them).

The proxy makes `blobs/`, `tmp/`, `index/`, `meta/`, ... inside `cache.path`, clears whatever
stands in the way of them (a file named `tmp`, say), sweeps `tmp/` and evicts from `blobs/`.
Pointed at `/` it would sweep `/tmp`; at `/etc` (or a link to it), or at a home directory, it
would mix its files with the system's or a user's and could clear theirs. So the cache gets a
directory of its own: not the filesystem root nor a system directory (after links are
followed), and, when it exists already, empty or one the proxy made (a cache already: what was
added to it since does not stop a restart).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

# What the proxy makes at the top of its cache directory.
OURS = frozenset(
    {
        "alive.lock",
        "blobs",
        "index",
        "index.lock",
        "inflight",
        "locks",
        "meta",
        "metrics",
        "policy",
        "tmp",
        "uploads",
    }
)
# What a volume or a backup tool puts at the top of any directory: never a reason to refuse.
ANYWHERE = frozenset({"lost+found"})
# Where no cache belongs: the directory itself, or anything below it.
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
)
# Shared by everything below them: the directory itself only.
SYSTEM_DIRS = (
    "/",
    "/home",
    "/media",
    "/mnt",
    "/opt",
    "/root",
    "/run",
    "/srv",
    "/tmp",
    "/var",
    "/var/lib",
    "/var/tmp",
    "/var/cache",
)


def ours(name: str) -> bool:
    return name in OURS or name in ANYWHERE or name.startswith(("index.damaged-", "."))


def unsafe_cache_dir(resolved: str, entries: Iterable[str]) -> str | None:
    """Why `resolved` (the cache directory with every link followed) cannot be the cache, given
    the names at its top (`entries`, empty when it does not exist yet); None when it can."""
    path = PurePosixPath(resolved)
    if str(path) in SYSTEM_DIRS:
        return f"is {path}, a directory the whole system shares"
    for tree in SYSTEM_TREES:
        if path == PurePosixPath(tree) or PurePosixPath(tree) in path.parents:
            return f"is inside {tree}, a system directory"
    names = set(entries)
    if "alive.lock" in names or {"index", "blobs"} <= names:
        return None  # a cache already: a file someone added since is not ours to judge
    foreign = sorted(name for name in names if not ours(name))
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return (
            f"holds files that are not the proxy's ({shown}): give the cache a directory of its own"
        )
    return None
