"""The admin commands (`condaproxy stats | purge | prefetch`) never print a credential of the
URL they were given: a proxy behind basic auth (`--url https://user:password@host`) or a
token path that could not be reached was named whole in the one line of the error, which
lands in CI logs. It is named through the URL masking rule now (rules/redact.py).

Real processes: the command, against a port nobody listens on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, free_port

SECRET = "AdminCliCredential5150"
URLS = {
    "password": "http://me:{}@127.0.0.1:{}",
    "lone-user-token": "http://{}@127.0.0.1:{}",
    "empty-password": "http://{}:@127.0.0.1:{}",
    "path-token": "http://127.0.0.1:{1}/t/{0}",
    "query-token": "http://127.0.0.1:{1}/?token={0}",
}


@pytest.mark.parametrize("command", [["stats"], ["purge", "pub"]])
@pytest.mark.parametrize("shape", list(URLS))
def test_an_unreachable_proxy_is_named_without_its_credentials(
    shape: str, command: list[str]
) -> None:
    url = URLS[shape].format(SECRET, free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAPROXY_")}
    done = subprocess.run(
        [sys.executable, "-m", "condaproxy", *command, "--url", url, "--token", "t0ken-0000001"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "cannot reach" in output and "127.0.0.1" in output, output
    for i in range(len(SECRET) - 7):
        assert SECRET[i : i + 8] not in output, output
