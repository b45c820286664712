"""The policy's first-seen file (`<cache>/policy/<hash>.first-seen.msgpack`, the clock a
cooldown trusts) found as something else: a fifo, a link, a directory, a file far too big,
bytes that are no map.

Before: a fifo in its place was opened and waited on for ever: the subdir's repodata request
hung, holding the subdir's policy lock, and every later one queued behind it. A link was
followed (the clock of whatever file it pointed at). The file cannot be rebuilt (starting the
clock again would release what it holds back), so the policy view fails closed: a 503 JSON at
once, and the log names the file; never a hang, never the unfiltered document.

Real processes: the test upstream and `condaproxy serve` (one worker, and two).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

DATA = {"linux-64/small-1.0-0.conda": os.urandom(2000)}
ADMIN = "admin-token-000001"
TIMEOUT = 15


def fifo(path: Path) -> None:
    os.mkfifo(path)


def link_to_a_copy(path: Path) -> None:
    copy = path.parent.parent.parent / "elsewhere.msgpack"
    copy.write_bytes(b"\x80")  # an empty map: every record would be new
    os.symlink(copy, path)


def directory(path: Path) -> None:
    path.mkdir()


def far_too_big(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(300 << 20)  # sparse: no disk, but past any first-seen map


def no_map(path: Path) -> None:
    path.write_bytes(b"\x93\x01\x02\x03")  # a msgpack list


DAMAGE: dict[str, Callable[[Path], None]] = {
    "a fifo": fifo,
    "a link": link_to_a_copy,
    "a directory": directory,
    "far too big": far_too_big,
    "no map": no_map,
}


@pytest.fixture(params=[1, 2], ids=["1 worker", "2 workers"])
def proxy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    upstream = Upstream(listed_channel(tmp_path / "channel", DATA)).start()
    config = write_config(
        tmp_path / "proxy.toml",
        tmp_path / "cache",
        {"ch": {"upstream": upstream.url}},
        600,
        extra='[policy]\ncooldown = "1d"\n',
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
    )
    running = Proxy(config, workers=request.param).start()
    try:
        yield running
    finally:
        running.stop(kill=True)  # a worker may still wait on a fifo (before the fix)
        upstream.stop()


def get(proxy: Proxy) -> httpx.Response:
    return httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=TIMEOUT)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_first_seen_file_that_is_no_such_file_is_a_503_never_a_hang(
    proxy: Proxy, tmp_path: Path, damage: str
) -> None:
    assert get(proxy).status_code == 200
    policy = tmp_path / "cache" / "policy"
    [times] = [p for p in policy.iterdir() if p.name.endswith(".first-seen.msgpack")]
    times.unlink()
    DAMAGE[damage](times)
    purged = httpx.delete(
        f"{proxy.url}/api/cache/ch?metadata_only=true",
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=TIMEOUT,
    )
    assert purged.status_code == 200, purged.text
    for _ in range(3):  # whichever worker answers, again and again
        got = get(proxy)
        assert got.status_code == 503, got.text[:300]
        assert "policy view" in got.json()["error"]
    assert times.name in proxy.log()  # the log names the damaged file
    assert httpx.get(f"{proxy.url}/healthz", timeout=TIMEOUT).status_code == 200
    no_crash_in_log(proxy.log())
    if times.is_dir():
        shutil.rmtree(times)
    else:
        times.unlink()
