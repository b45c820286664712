"""README "Operating it": `condaproxy prefetch` "follows the job ... until it is done (exit 0) or
failed (exit 1)", and the status page shows "the latest prefetch jobs (running, done or
failed)". A job is kept in the index; when the proxy stopped (SIGTERM) or died (kill -9) while
it ran, it stayed "fetching" for ever: the status page showed it running, and the CLI following
it never returned. Such a job now reads as failed, saying it was interrupted."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ROOT, Upstream

pytestmark = pytest.mark.integration

ADMIN = "prefetch-admin-token-1"


@pytest.fixture
def slow_upstream(channel_dir: Path) -> Iterator[Upstream]:
    """An upstream of our own: it is killed at the end, its trickling answer unfinished."""
    server = Upstream(channel_dir).start()
    yield server
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(10)


SLOW = "linux-64/datatool-0.9-h0.conda"


@pytest.mark.parametrize("how", ["sigterm", "kill-9"])
def test_a_job_cut_short_by_a_restart_reads_as_failed(
    start_proxy, slow_upstream: Upstream, channel_dir: Path, tmp_path: Path, how: str
) -> None:
    upstream = slow_upstream
    body = (channel_dir / SLOW).read_bytes()
    # A byte every 50 ms: the job is still fetching when we stop, and the upstream notices the
    # proxy gone at its next byte.
    upstream.override(f"/{SLOW}", body, trickle=0.05)
    config = {"cf": {"upstream": upstream.url}}
    tokens = {"ops": {"token": ADMIN, "roles": {"*": "admin"}}}
    cache = tmp_path / "cache"
    auth = {"x-api-key": ADMIN}
    first = start_proxy(config, cache=cache, tokens=tokens)
    answer = httpx.post(
        f"{first.url}/api/cache/cf/linux-64/prefetch",
        json={"packages": [SLOW.split("/")[1]]},
        headers=auth,
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the download has begun
        if upstream.count("GET", f"/{SLOW}"):
            break
        time.sleep(0.05)
    first.stop(kill=how == "kill-9")
    upstream.reset()

    second = start_proxy(config, cache=cache, tokens=tokens)
    jobs = httpx.get(f"{second.url}/api/cache/stats", headers=auth, timeout=10).json()["prefetch"]
    (job,) = [j for j in jobs if j["id"] == job_id]
    assert job["state"] == "failed" and "interrupted" in job["error"], job
    assert "owner" not in job
    page = httpx.get(second.url + "/", headers={"accept": "application/json"}, timeout=10).json()
    (shown,) = [j for j in page["prefetch"] if j["id"] == job_id]
    assert shown["state"] == "failed"
    # The CLI following it returns, with the job's failure (exit 1), instead of polling for ever.
    follow = subprocess.run(
        [sys.executable, "-c", FOLLOW, second.url, ADMIN, job_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.strip() == "failed"


FOLLOW = """
import sys
from condaproxy.ops.client import AdminClient, follow_prefetch
url, token, job_id = sys.argv[1:]
client = AdminClient(url, token)
job = client.job(job_id) or {}
print(follow_prefetch(client, {**job, "state": "fetching"}, poll=0.1)["state"])
"""
