"""cli.prepare_metrics_dir: each `serve` its own directory; a start removes only the
directories of `serve`s that are gone, never a live one's nor anything not named as ours."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from condaproxy import cli


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cli, "SHARED_MEMORY", tmp_path / "shm")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    (tmp_path / "shm").mkdir()
    return tmp_path / "shm"


def made(directory: Path, locked: bool) -> int | None:
    directory.mkdir()
    fd = os.open(directory / cli.METRICS_OWNER, os.O_RDWR | os.O_CREAT, 0o644)
    if locked:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd
    os.close(fd)
    return None


def test_a_start_sweeps_the_dead_and_keeps_the_live_and_the_foreign(
    shm: Path, tmp_path: Path
) -> None:
    dead = shm / f"{cli.METRICS_PREFIX}0123-1-aa"
    live = shm / f"{cli.METRICS_PREFIX}0123-2-bb"
    foreign = shm / "someone-elses"
    made(dead, locked=False)
    held = made(live, locked=True)
    made(foreign, locked=False)
    try:
        mine = cli.prepare_metrics_dir(tmp_path / "cache")
        assert not dead.exists()
        assert live.is_dir() and foreign.is_dir() and mine.is_dir()
        assert mine != live and os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(mine)
        again = cli.prepare_metrics_dir(tmp_path / "cache")  # a second serve, same cache
        assert mine.is_dir() and again != mine
    finally:
        assert held is not None
        os.close(held)
        cli.release_metrics_dir(mine)
    assert not mine.exists()
