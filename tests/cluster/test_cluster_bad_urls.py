"""README "Configuration": a bad URL stops start-up with one line naming the file and the key.
A `cluster.redis_url` whose port or IPv6 literal does not parse (or that names no host or a
database that is not a number) passed the scheme check and failed as a traceback when the
app started (or as one from the check itself); a `storage.url` that does not parse likewise.
The Redis URL is never shown: it may hold the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

PASSWORD = "pw5ecret-redis"


def serve(tmp_path: Path, storage_url: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n'
        f'[storage]\nurl = "{storage_url}"\nendpoint = "http://127.0.0.1:1"\n'
        "allow_http = true\nconnect_timeout = 0.5\n"
        f'[cluster]\nredis_url = "{redis_url}"\n'
        '[channels.local]\nupstream = "http://127.0.0.1:2"\n'
    )
    command = [sys.executable, "-m", "condaproxy", "serve", "--config", str(config), "--port", "1"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("storage_url", "redis_url", "key"),
    [
        ("s3://bucket-one", f"redis://:{PASSWORD}@127.0.0.1:notaport/0", "cluster.redis_url"),
        ("s3://bucket-one", f"redis://:{PASSWORD}@[::1:6379/0", "cluster.redis_url"),
        ("s3://bucket-one", f"redis://:{PASSWORD}@/0", "cluster.redis_url"),
        ("s3://bucket-one", f"redis://:{PASSWORD}@127.0.0.1:6379/zero", "cluster.redis_url"),
        ("s3://[bucket-one", "redis://127.0.0.1:6379/0", "storage.url"),
    ],
    ids=["port", "ipv6", "no-host", "database", "storage-url"],
)
def test_a_malformed_shared_url_stops_serve_with_one_line_naming_the_key(
    tmp_path: Path, storage_url: str, redis_url: str, key: str
) -> None:
    done = serve(tmp_path, storage_url, redis_url)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'{key}'" in lines[0], lines
