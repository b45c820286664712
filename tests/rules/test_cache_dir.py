"""rules/cache_dir.py: which directories may hold the cache (the pure half of the check that
`serve` and `check-config` make; tests/hostile/test_cache_dir_of_its_own.py runs it)."""

from __future__ import annotations

import pytest

from condaproxy.rules.cache_dir import unsafe_cache_dir


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/", "the whole system"),
        ("/tmp", "the whole system"),
        ("/home", "the whole system"),
        ("/var/cache", "the whole system"),
        ("/etc", "inside /etc"),
        ("/etc/condaproxy/cache", "inside /etc"),
        ("/usr/local/cache", "inside /usr"),
        ("/proc/self/cwd", "inside /proc"),
        ("/dev/shm/cache", "inside /dev"),
    ],
)
def test_system_places_are_refused(path: str, says: str) -> None:
    why = unsafe_cache_dir(path, [])
    assert why is not None and says in why


@pytest.mark.parametrize(
    "path", ["/var/cache/condaproxy", "/tmp/cache", "/home/ci/cache", "/data", "/srv/condaproxy"]
)
def test_a_directory_of_its_own_is_fine(path: str) -> None:
    assert unsafe_cache_dir(path, []) is None


@pytest.mark.parametrize(
    "entries",
    [
        [],
        ["lost+found"],  # a volume's root
        ["blobs", "index", "tmp", "meta", "locks", "inflight", "uploads", "alive.lock"],
        ["index.damaged-1796134777", ".write-probe-12"],
        ["alive.lock", "index", "filler"],  # a cache already: a file added since is no reason
        ["index", "blobs", "README.txt"],  # a cache of a version before alive.lock
    ],
)
def test_an_empty_directory_or_a_cache_is_fine(entries: list[str]) -> None:
    assert unsafe_cache_dir("/srv/condaproxy", entries) is None


@pytest.mark.parametrize(
    "entries",
    [["notes.txt"], ["projects", "tmp", ".bashrc"], ["index", "thesis.pdf"], ["a", "b", "c", "d"]],
)
def test_a_directory_of_others_files_is_refused_naming_some(entries: list[str]) -> None:
    why = unsafe_cache_dir("/home/someone", entries)
    assert why is not None and "directory of its own" in why
    assert repr(sorted(e for e in entries if e not in ("tmp", "index", ".bashrc"))[0]) in why
