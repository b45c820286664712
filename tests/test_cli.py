"""The command line an operator types: version, check-config, token new, and the admin clients
against a live proxy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ROOT

ADMIN = "admin-token-123"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "condaproxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_version_names_the_package():
    result = cli("--version")
    assert result.returncode == 0 and re.match(r"condaproxy \d+\.\d+", result.stdout)


def test_token_new_prints_a_token_conda_can_carry_in_a_url():
    tokens = {cli("token", "new").stdout.strip() for _ in range(3)}
    assert len(tokens) == 3
    assert all(re.fullmatch(r"[a-zA-Z0-9-]{40}", t) for t in tokens)


def test_check_config_prints_the_effective_settings_with_secrets_masked(tmp_path: Path):
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n'
        '[channels.org]\nupstream = "https://up.example/org"\nupstream_bearer = "s3cret-bearer"\n'
        '[tokens.ci]\ntoken = "has_underscore_token"\nroles = { org = "read" }\n'
    )
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["channels"]["org"]["upstream_bearer"] == "***"
    assert shown["cache"]["repodata_ttl"] == 60  # defaults are shown too
    assert "s3cret-bearer" not in result.stdout + result.stderr
    assert "has_underscore_token" not in result.stdout + result.stderr
    assert "tokens.ci.token" in result.stderr and "/t/<token>/" in result.stderr


def test_check_config_refuses_a_bad_config_with_exit_2(tmp_path: Path):
    config = tmp_path / "proxy.toml"
    config.write_text('[channels.x]\nprivate = "yes please"\nupstream = "https://a.example"\n')
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 2
    assert "'channels.x.private'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_admin_commands_talk_to_a_live_proxy(upstream, start_proxy):
    tokens = {"ops": {"token": ADMIN, "roles": {"*": "admin"}}}
    proxy = start_proxy({"local": {"upstream": upstream.url}}, tokens=tokens)
    env = {"CONDAPROXY_URL": proxy.url, "CONDAPROXY_TOKEN": ADMIN, "PATH": "/usr/bin:/bin"}
    assert httpx.get(f"{proxy.url}/local/linux-64/datatool-1.0-h2.conda").status_code == 200

    stats = cli("stats", env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["channels"]["local"]["files"] >= 1

    job = cli("prefetch", "local", "noarch", "pyutil-0.4-pyh0.conda", env=env)
    assert job.returncode == 0, job.stderr
    assert json.loads(job.stdout)["state"] == "done"
    assert "prefetch" in job.stderr  # the progress bar

    purged = cli("purge", "local/linux-64", env=env)
    assert purged.returncode == 0 and json.loads(purged.stdout)["removed"]["files"] >= 1

    refused = cli("stats", "--token", "wrong-token-000", env=env)
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
