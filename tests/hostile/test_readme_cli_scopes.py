"""`condaproxy purge` and `condaproxy prefetch` given a scope with a `.` or `..` segment,
against a real proxy. httpx resolves dot segments before it sends a request, so the proxy
never saw them: `condaproxy purge pub/../other` purged the channel `other`, and
`prefetch pub/../other linux-64` warmed it. The README's path rule (a `.` or `..` segment is
a 400) holds for the CLI too: it sends such a segment encoded, the proxy refuses it, the
command exits 1, and nothing is purged or fetched."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ROOT, Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

ADMIN = "admin-token-38813"
CACHED = "linux-64/libzlib-1.3-h0.conda"


@pytest.fixture(scope="module")
def proxy(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("cli-scopes")
    upstream = Upstream(channel_dir).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}, "other": {"upstream": upstream.url}},
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


def cli(proxy: Proxy, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAPROXY_")}
    env.update({"CONDAPROXY_URL": proxy.url, "CONDAPROXY_TOKEN": ADMIN})
    return subprocess.run(
        [sys.executable, "-m", "condaproxy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def hit(proxy: Proxy, channel: str) -> bool:
    return httpx.head(f"{proxy.url}/{channel}/{CACHED}").headers["x-cache"] == "HIT"


@pytest.mark.parametrize(
    "scope",
    [
        "pub/../other",
        "pub/linux-64/../../other",
        "other/./linux-64",
        "other/linux-64/./libzlib-1.3-h0.conda",
        "pub/linux-64/..",
        "..",
    ],
)
def test_a_purge_scope_with_a_dot_segment_purges_nothing(proxy, scope):
    for channel in ("pub", "other"):
        httpx.get(f"{proxy.url}/{channel}/{CACHED}").raise_for_status()
        assert hit(proxy, channel)
    done = cli(proxy, "purge", scope)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "relative path step" in done.stderr, done.stderr
    assert hit(proxy, "pub") and hit(proxy, "other")


@pytest.mark.parametrize(
    ("channel", "subdir"), [("pub/../other", "linux-64"), ("other", "."), ("..", "linux-64")]
)
def test_a_prefetch_with_a_dot_segment_starts_no_job(proxy, channel, subdir):
    done = cli(proxy, "prefetch", channel, subdir, "libzlib", "--no-wait")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "relative path step" in done.stderr, done.stderr
    jobs = httpx.get(f"{proxy.url}/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    assert jobs["prefetch"] == []


def test_the_scopes_as_written_still_work(proxy):
    httpx.get(f"{proxy.url}/other/{CACHED}").raise_for_status()
    done = cli(proxy, "purge", f"other/{CACHED}")
    assert done.returncode == 0, done.stderr
    assert not hit(proxy, "other")
    assert cli(proxy, "purge", "/pub/").returncode == 0
    assert not hit(proxy, "pub")
