"""A second `condaproxy serve` on the same cache directory (the locks allow it: a restart that
overlaps, a rolling update on a shared volume, an operator who starts one more by mistake).

Before: prometheus-client's files lived in one directory named after the cache path, which
every `serve` emptied at start and removed at stop. Once the second one had started and
stopped, the first one's /metrics was a 500 ("PROMETHEUS_MULTIPROC_DIR is not a directory"),
its counts were gone, and a worker it restarted died at import (FileNotFoundError on its
metrics file) again and again: it served on with fewer workers. While both ran, each one's
/metrics counted the other's requests. Now each `serve` has a directory of its own, held by a
flock for its life; a start removes only the directories nobody holds (a `serve` killed -9).

Real processes: the test upstream and `condaproxy serve` (one worker, and two).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import kill_a_worker, listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

DATA = {"linux-64/small-1.0-0.conda": os.urandom(2000)}
REPODATA = "/ch/linux-64/repodata.json"
TIMEOUT = 20


def repodata_requests(proxy: Proxy) -> float:
    """The repodata requests this `serve`'s /metrics counts."""
    got = httpx.get(proxy.url + "/metrics", timeout=TIMEOUT)
    assert got.status_code == 200, got.text[:300]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in got.text.splitlines()
        if line.startswith('condaproxy_requests_total{kind="repodata"')
    )


def get_repodata(proxy: Proxy, times: int) -> None:
    for _ in range(times):
        got = httpx.get(proxy.url + REPODATA, timeout=TIMEOUT)
        assert got.status_code == 200, got.text[:300]


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    upstream = Upstream(listed_channel(tmp_path / "channel", DATA)).start()
    try:
        yield write_config(
            tmp_path / "proxy.toml", tmp_path / "cache", {"ch": {"upstream": upstream.url}}, 600
        )
    finally:
        upstream.stop()


def second_serve_stopped(config: Path) -> None:
    Proxy(config).start().stop()


def second_serve_killed(config: Path) -> None:
    """Killed -9: it removes nothing; a third one started after it sweeps what it left."""
    Proxy(config).start().stop(kill=True)
    Proxy(config).start().stop()


@pytest.mark.parametrize("second", [second_serve_stopped, second_serve_killed])
@pytest.mark.parametrize("workers", [1, 2], ids=["1 worker", "2 workers"])
def test_another_serve_on_the_cache_leaves_the_metrics_of_the_first_alone(
    config: Path, workers: int, second: object
) -> None:
    first = Proxy(config, workers=workers).start()
    try:
        get_repodata(first, 4)
        assert repodata_requests(first) == 4
        other = Proxy(config).start()
        try:
            get_repodata(other, 3)
            assert repodata_requests(first) == 4, "the first serve counts the other's requests"
            assert repodata_requests(other) == 3
        finally:
            other.stop()
        second(config)  # type: ignore[operator]
        assert repodata_requests(first) == 4, "the first serve's counts were lost"
        get_repodata(first, 2)
        assert repodata_requests(first) == 6
    finally:
        first.stop()
    no_crash_in_log(first.log())


def test_a_worker_restarted_after_another_serve_stopped_serves(config: Path) -> None:
    first = Proxy(config, workers=2).start()
    try:
        get_repodata(first, 2)
        second_serve_stopped(config)
        kill_a_worker(first)
        get_repodata(first, 6)
        assert repodata_requests(first) >= 6
    finally:
        first.stop()
    assert "FileNotFoundError" not in first.log(), first.log()[-3000:]
