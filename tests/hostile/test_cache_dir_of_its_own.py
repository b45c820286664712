"""`cache.path` pointed where the proxy's files would mix with others' is refused at start.

The proxy makes `blobs/`, `tmp/`, `index/`, `meta/`, `metrics/` ... in `cache.path`, clears
what stands in their way, removes `metrics/` at start and swept every file it found in `tmp/`.
`cache.path = "/"` started, and swept `/tmp`; `/etc`, a link into it, `/tmp` or a directory
full of someone's files all started too. Now `serve` refuses each with one line naming
`cache.path`, touching nothing; and in the proxy's own cache the start-up sweep deletes only
the temp files the proxy names (`*.partial`), never another file someone left in `tmp/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import listed_channel
from tests.support.processes import ROOT, Upstream, free_port, write_config

pytestmark = pytest.mark.integration


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    port = str(free_port())
    return subprocess.run(
        [sys.executable, "-m", "condaproxy", "serve", "--config", str(config), "--port", port],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def link_to_etc(tmp: Path) -> Path:
    (tmp / "etc-link").symlink_to("/etc")
    return tmp / "etc-link"


def below_link_to_etc(tmp: Path) -> Path:
    return link_to_etc(tmp) / "condaproxy-cache"


def someones_home(tmp: Path) -> Path:
    home = tmp / "home"
    (home / "projects").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    (home / "tmp").mkdir()
    (home / "tmp" / "draft.txt").write_text("mine too")
    return home


PLACES: dict[str, Callable[[Path], Path]] = {
    "the filesystem root": lambda tmp: Path("/"),
    "/etc": lambda tmp: Path("/etc"),
    "a link to /etc": link_to_etc,
    "below a link to /etc": below_link_to_etc,
    "under /usr": lambda tmp: Path("/usr/share/condaproxy-cache"),
    "/tmp itself": lambda tmp: Path("/tmp"),
    "a directory of someone's files": someones_home,
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_cache_path_shared_with_other_files_is_refused_naming_the_key(
    tmp_path: Path, place: str
) -> None:
    cache = PLACES[place](tmp_path)
    before = sorted(os.listdir(cache)) if cache.is_dir() else None
    config = write_config(
        tmp_path / "proxy.toml", cache, {"ch": {"upstream": "http://127.0.0.1:9"}}
    )
    started = serve(config)
    assert started.returncode == 2, started.stderr
    [line] = started.stderr.strip().splitlines()
    assert "'cache.path'" in line and "Traceback" not in line
    after = sorted(os.listdir(cache)) if cache.is_dir() else None
    assert after == before  # nothing made, nothing cleared
    if place == "a directory of someone's files":
        assert (cache / "tmp" / "draft.txt").read_text() == "mine too"


@pytest.mark.parametrize("kind", ["file", "directory", "link"])
def test_the_start_up_sweep_deletes_only_the_proxys_own_temp_files(
    tmp_path: Path, start_proxy, kind: str
) -> None:
    """A kill -9 leaves `*.partial` files: swept. What someone else put in `tmp/` stays."""
    upstream = Upstream(
        listed_channel(tmp_path / "channel", {"linux-64/a-1-0.conda": b"a" * 999})
    ).start()
    cache = tmp_path / "cache"
    try:
        proxy = start_proxy({"ch": {"upstream": upstream.url}}, cache=cache)
        proxy.stop()
        theirs = cache / "tmp" / "keep-me.txt"
        if kind == "file":
            theirs.write_text("not the proxy's")
        elif kind == "directory":
            theirs.mkdir()
        else:
            (tmp_path / "target").write_text("not the proxy's")
            theirs.symlink_to(tmp_path / "target")
        left = cache / "tmp" / "0123abcd.partial"  # what a killed writer leaves
        left.write_bytes(b"half")

        proxy = start_proxy({"ch": {"upstream": upstream.url}}, cache=cache)
        got = httpx.get(f"{proxy.url}/ch/linux-64/a-1-0.conda", timeout=30)
        assert (got.status_code, got.content) == (200, b"a" * 999)
        assert not left.exists()
        assert theirs.exists() or theirs.is_symlink()
        assert (tmp_path / "target").exists() or kind != "link"
    finally:
        upstream.stop()
