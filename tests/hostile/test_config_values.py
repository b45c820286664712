"""Values that load but would bite are refused at start-up, one line naming the key (issue 7,
section 7): every configured URL, every credential, token values, timeouts, sizes and the
`serve` options, checked by a real `condaproxy check-config` / `serve` process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from condaproxy import settings as loading
from condaproxy.settings import ConfigError, load_settings
from tests.support.processes import ROOT

UP = "https://up.example/team"
CHANNEL = f'[channels.team]\nupstream = "{UP}"\n'
STORAGE = '[storage]\nurl = "s3://bucket"\n'


def run(tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    config = tmp_path / "proxy.toml"
    config.write_text(f'[cache]\npath = "{tmp_path / "cache"}"\n{text}')
    command = args or ("check-config",)
    return subprocess.run(
        [sys.executable, "-m", "condaproxy", *command, "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def refused(
    tmp_path: Path, text: str, key: str, *args: str, env: dict[str, str] | None = None
) -> str:
    result = run(tmp_path, text, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"'{key}'" in line
    return line


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/team",  # an IPv6 literal that does not close: was a traceback
        "http://up.example:abc/team",  # a port that is not a number
        "http://up.example:99999/team",
        f"{UP}?label=main",  # every path would be appended to the query
        f"{UP}#main",
        f"{UP} ",  # sent as %20
        f" {UP}",
        f"{UP}\\n",
        "https://up.exa\\tmple/team",
    ],
)
def test_an_upstream_url_that_cannot_be_a_base_is_refused(tmp_path, url):
    refused(tmp_path, f'[channels.team]\nupstream = "{url}"\n', "channels.team.upstream")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            f'{CHANNEL}allowed_origins = ["https://cdn.example?x=1"]\n',
            "channels.team.allowed_origins",
        ),
        (
            f'{CHANNEL}allowed_origins = ["https://u:p@cdn.example"]\n',
            "channels.team.allowed_origins",
        ),
        ('[server]\nexternal_url = "https://proxy.example/?x#y"\n', "server.external_url"),
        ('[server]\nexternal_url = "https://me:pw@proxy.example"\n', "server.external_url"),
        (f'{STORAGE}endpoint = "https://minio.example:9000/?x"\n', "storage.endpoint"),
        (
            f'{STORAGE}[cluster]\nredis_url = "redis://r"\npeer_token = "0123456789abcdef"\n'
            'peer_url = "http://pod:8080#x"\n',
            "cluster.peer_url",
        ),
    ],
)
def test_every_configured_url_meets_the_same_rule(tmp_path, text, key):
    line = refused(tmp_path, text, key)
    assert ":pw@" not in line and ":p@" not in line  # a password in a URL is not echoed


def test_a_good_upstream_url_is_taken_normalized(tmp_path):
    result = run(tmp_path, '[channels.team]\nupstream = "HTTP://[::1]:8080/team/"\n')
    assert result.returncode == 0, result.stderr
    assert '"upstream": "http://[::1]:8080/team"' in result.stdout


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('upstream_token = "env:TEAM_TOKEN"', "channels.team.upstream_token"),
        ('upstream_bearer = "env:TEAM_TOKEN"', "channels.team.upstream_bearer"),
        (
            'upstream_username = "ci"\nupstream_password = "env:TEAM_TOKEN"',
            "channels.team.upstream_password",
        ),
    ],
)
@pytest.mark.parametrize("value", ["", "   ", "s3cr3t-value\n"])
def test_a_blank_or_padded_credential_is_refused_not_sent(tmp_path, line, key, value):
    """`env:` pointing at a variable that is set but empty (or holds a secret file's
    trailing newline) was taken: `/t//`, `Bearer `, or a header that never matched."""
    text = f"{CHANNEL}{line}\n"
    message = refused(tmp_path, text, key, env={"TEAM_TOKEN": value})
    if value.strip():
        assert value.strip() not in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[metrics]\ntoken = ""\n', "metrics.token"),
        ('[tokens.ci]\ntoken = "ci-token-123 "\nroles = { "*" = "read" }\n', "tokens.ci.token"),
        (f'{STORAGE}access_key_id = ""\nsecret_access_key = ""\n', "storage.access_key_id"),
        (f'{STORAGE}[cluster]\nredis_url = ""\n', "cluster.redis_url"),
        ('[cache]\npath = ""\n', "cache.path"),
    ],
)
def test_blank_values_that_name_a_place_or_a_secret_are_refused(tmp_path, text, key):
    # The [cache] table written by run() comes first: a second one would be a TOML error.
    if text.startswith("[cache]"):
        config = tmp_path / "proxy.toml"
        config.write_text(text)
        with pytest.raises(ConfigError, match=f"'{key}'"):
            load_settings(config, environ={})
        return
    refused(tmp_path, text, key)


def test_an_empty_host_from_the_environment_does_not_listen_everywhere(tmp_path):
    refused(tmp_path, CHANNEL, "server.host", env={"CONDAPROXY_SERVER_HOST": ""})


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('upstream_password = "pw-only"', "channels.team.upstream_password"),  # was dropped
        ('upstream_bearer = "b-123456"\nupstream_username = "ci"', "channels.team.upstream_bearer"),
    ],
)
def test_credentials_that_would_be_silently_dropped_are_refused(tmp_path, line, key):
    refused(tmp_path, f"{CHANNEL}{line}\n", key)


def test_two_tokens_with_one_value_are_refused(tmp_path):
    """The roles of whichever was compared last applied: a read token sharing a value with an
    admin token was an admin token."""
    text = (
        f'{CHANNEL}[tokens.reader]\ntoken = "same-value-1"\nroles = {{ team = "read" }}\n'
        '[tokens.ops]\ntoken = "same-value-1"\nroles = { "*" = "admin" }\n'
    )
    line = refused(tmp_path, text, "tokens.ops.token")
    assert "same-value-1" not in line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[upstream]\nread_timeout = inf\n", "upstream.read_timeout"),
        ("[upstream]\nconnect_timeout = inf\n", "upstream.connect_timeout"),
        ("[uploads]\nread_timeout = inf\n", "uploads.read_timeout"),
    ],
)
def test_an_infinite_timeout_is_refused(tmp_path, text, key):
    """aiohttp cannot schedule `inf`: every upstream request failed with an OverflowError."""
    refused(tmp_path, text, key)


def test_an_infinite_timeout_from_the_environment_is_refused(tmp_path):
    var = "CONDAPROXY_UPSTREAM_READ_TIMEOUT"
    assert var in refused(tmp_path, CHANNEL, "upstream.read_timeout", env={var: "inf"})


@pytest.mark.parametrize("key", ["repodata_ttl", "negative_ttl"])
@pytest.mark.parametrize("value", ["100000000000000000000", "31536001", "-1"])
def test_a_ttl_beyond_a_year_or_below_zero_is_refused(tmp_path, key, value):
    """`repodata_ttl = 100000000000000000000` loaded, and went out as a max-age no client reads
    as meant (past 2^31 seconds); a year is the most a cache of conda metadata can mean."""
    refused(tmp_path, f"{key} = {value}\n", f"cache.{key}")  # below run()'s [cache]


def test_a_ttl_of_a_year_is_taken(tmp_path):
    assert run(tmp_path, "repodata_ttl = 31536000\n").returncode == 0


@pytest.mark.parametrize("value", ['"0.5"', '"0.4B"', '"0.0001KB"'])
def test_a_size_that_rounds_to_zero_does_not_lift_the_limit(tmp_path, value):
    """`max_size = "0.5"` was 0 bytes, which means unbounded."""
    refused(tmp_path, f"[uploads]\nmax_upload_size = {value}\n", "uploads.max_upload_size")
    config = tmp_path / "other.toml"
    config.write_text(f"[cache]\nmax_size = {value}\n")
    with pytest.raises(ConfigError, match=r"'cache.max_size'"):
        load_settings(config, environ={})


def test_serve_options_meet_the_rules_of_the_file(tmp_path):
    """`serve --port 70000` was a traceback from the socket layer; `--workers` had no bound."""
    line = refused(tmp_path, CHANNEL, "server.port", "serve", "--port", "70000")
    assert "--port" in line
    config = tmp_path / "proxy.toml"
    settings = load_settings(config, environ={})
    with pytest.raises(ConfigError, match=r"'server.workers'.*--workers"):
        loading.with_server_options(settings, workers=1000)
    with pytest.raises(ConfigError, match=r"'server.host'.*--host"):
        loading.with_server_options(settings, host="")
    assert loading.with_server_options(settings, port=9001, workers=2).server.port == 9001
