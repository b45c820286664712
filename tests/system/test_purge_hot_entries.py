"""A purge makes the next request for what it covers a miss in every worker, also when another
channel keeps the same blob (the store is content-addressed): no worker serves a purged file
as a hit from what it remembered before the purge."""

from __future__ import annotations

import time

import httpx
import pytest

ADMIN = "purge-admin-token-1"


@pytest.mark.parametrize("scope", ["file", "channel"])
def test_no_worker_serves_a_purged_file_as_a_hit(start_proxy, upstream, scope) -> None:
    proxy = start_proxy(
        {"cf": {"upstream": upstream.url}, "team": {"upstream": upstream.url}},
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
        workers=2,
    )
    path = "linux-64/libzlib-1.3-h0.conda"
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for channel in ("cf", "team"):
            for _ in range(12):  # both workers remember the file as cached
                got = client.get(f"/{channel}/{path}")
                assert got.status_code == 200, got.text
        assert client.get(f"/cf/{path}").headers["x-cache"] == "HIT"
        # Commits still waiting (the write-behind's bound: 1 s) are dropped by any purge:
        # let them land first, so team's entry is in the index.
        time.sleep(1.5)
        target = f"/api/cache/cf/{path}" if scope == "file" else "/api/cache/cf"
        assert client.delete(target, headers={"x-api-key": ADMIN}).status_code == 200
        outcomes = [client.get(f"/cf/{path}").headers["x-cache"] for _ in range(12)]
        # The first request after the purge downloads it again (whichever worker answers);
        # nobody answers HIT before that.
        assert outcomes[0] == "MISS", outcomes
        # team's copy was not purged: still a hit.
        team = client.get(f"/team/{path}")
        assert team.headers["x-cache"] == "HIT", (outcomes, team.headers, team.status_code)
