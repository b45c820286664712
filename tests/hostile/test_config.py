"""A hostile or careless configuration cannot silently weaken the proxy (issue 7, section 7).

Booleans are booleans, sizes are sizes, reserved names are refused, typos in the environment are
errors, an unusable cache path is one line, and a changed upstream takes over at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from condaproxy.settings import ConfigError, load_settings
from tests.support.channel import Pkg, build_channel
from tests.support.processes import ROOT, Upstream

BASE = '[channels.team]\nupstream = "https://up.example/team"\n'


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return load_settings(path, environ=env or {})


def refused(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    message = str(info.value)
    assert str(tmp_path / "proxy.toml") in message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", ['"yes please"', '"y"', '"enabled"', '"true"', "1", '"on"'])
@pytest.mark.parametrize("key", ["private", "mirror_only"])
def test_non_boolean_in_the_file_cannot_start_a_private_channel_public(tmp_path, key, value):
    message = refused(tmp_path, f"{BASE}{key} = {value}\n")
    assert f"'channels.team.{key}'" in message
    assert "bool" in message


@pytest.mark.parametrize("value", ["yes please", "y", "enabled", "on", "", "2", "tru"])
def test_non_boolean_from_the_environment_is_refused_naming_the_variable(tmp_path, value):
    var = "CONDAPROXY_CHANNELS__TEAM__PRIVATE"
    message = refused(tmp_path, BASE, {var: value})
    assert "'channels.team.private'" in message
    assert var in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("no", False), ("0", False)],
)
def test_environment_booleans_accept_the_documented_spellings(tmp_path, value, expected):
    settings = load(tmp_path, BASE, {"CONDAPROXY_CHANNELS__TEAM__PRIVATE": value})
    assert settings.channels["team"].private is expected


def test_a_boolean_referenced_with_env_is_parsed_by_the_same_rule(tmp_path):
    text = f'{BASE}private = "env:TEAM_PRIVATE"\n'
    assert load(tmp_path, text, {"TEAM_PRIVATE": "yes"}).channels["team"].private is True
    message = refused(tmp_path, text, {"TEAM_PRIVATE": "yes please"})
    assert "TEAM_PRIVATE" in message and "'channels.team.private'" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("max_size = -1", "cache.max_size"),
        ('max_size = "-1GiB"', "cache.max_size"),
        ("max_size = true", "cache.max_size"),
        ('max_size = "lots"', "cache.max_size"),
        ("max_size = 1.5", "cache.max_size"),
        ('min_free = "-5GB"', "cache.min_free"),
        ("repodata_ttl = -1", "cache.repodata_ttl"),
        ("negative_ttl = -5", "cache.negative_ttl"),
        ('max_repodata_size = "1KB"', "cache.max_repodata_size"),
    ],
)
def test_negative_or_meaningless_cache_sizes_are_refused(tmp_path, line, key):
    message = refused(tmp_path, f"[cache]\n{line}\n")
    assert f"'{key}'" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("max_upload_size = 0", "uploads.max_upload_size"),
        ("max_upload_size = -1", "uploads.max_upload_size"),
        ("max_unpacked_size = 0", "uploads.max_unpacked_size"),
        ("max_unpacked_ratio = 0", "uploads.max_unpacked_ratio"),
        ("read_timeout = 0", "uploads.read_timeout"),
    ],
)
def test_upload_limits_that_would_mean_something_else_are_refused(tmp_path, line, key):
    assert f"'{key}'" in refused(tmp_path, f"[uploads]\n{line}\n")


@pytest.mark.parametrize(
    ("var", "value"), [("CONDAPROXY_CACHE_MAX_SIZE", "-1"), ("CONDAPROXY_CACHE_MIN_FREE", "x")]
)
def test_bad_sizes_from_the_environment_name_the_variable(tmp_path, var, value):
    assert var in refused(tmp_path, BASE, {var: value})


def test_sizes_accept_units_from_file_and_environment(tmp_path):
    settings = load(
        tmp_path,
        '[cache]\nmax_size = "1.5GiB"\nmin_free = 0\n',
        {"CONDAPROXY_UPLOADS_MAX_UPLOAD_SIZE": "5 MiB"},
    )
    assert settings.cache.max_size == 1536 * 1024**2
    assert settings.cache.min_free == 0
    assert settings.uploads.max_upload_size == 5 * 1024**2


@pytest.mark.parametrize(
    "name",
    ["api", "t", "healthz", "readyz", "metrics", "openapi.json", "api/v1", "metrics/x", "t/abc"],
)
def test_channel_names_that_are_the_proxys_own_routes_are_refused(tmp_path, name):
    message = refused(tmp_path, f'[channels."{name}"]\nupstream = "https://up.example/x"\n')
    assert f"'channels.{name}'" in message


@pytest.mark.parametrize("name", ["a b", "x/../y", "x//y", "%2e%2e", "ch\\x", "-", ".hidden"])
def test_channel_names_outside_the_grammar_are_refused(tmp_path, name):
    refused(tmp_path, f'[channels."{name}"]\nupstream = "https://up.example/x"\n')


@pytest.mark.parametrize("name", ["healthz-mirror", "metricsfoo", "api2", "team/label/dev"])
def test_names_that_only_start_like_a_route_are_accepted(tmp_path, name):
    settings = load(tmp_path, f'[channels."{name}"]\nupstream = "https://up.example/x"\n')
    assert name in settings.channels


@pytest.mark.parametrize(
    "var",
    [
        "CONDAPROXY_CACHE_REPODTA_TTL",
        "CONDAPROXY_CAHCE_PATH",
        "CONDAPROXY_SERVER",
        "CONDAPROXY_CHANNELS__TEAM__UPSTREM",
        "CONDAPROXY_CHANNELS__TEAM",
        "CONDAPROXY_TOKENS__CI__TOKN",
    ],
)
def test_a_misspelled_environment_variable_is_an_error(tmp_path, var):
    text = BASE + '[tokens.ci]\ntoken = "ci-token-123"\nroles = { team = "write" }\n'
    assert var in refused(tmp_path, text, {var: "5"})


def test_a_variable_the_file_refers_to_is_not_a_typo(tmp_path):
    text = BASE + '[tokens.ci]\ntoken = "env:CONDAPROXY_TOKEN_CI"\n'
    settings = load(tmp_path, text, {"CONDAPROXY_TOKEN_CI": "ci-token-123"})
    assert settings.tokens["ci"].token.value == "ci-token-123"


def test_tokens_can_be_overridden_and_added_from_the_environment(tmp_path):
    text = BASE + '[tokens.ci]\ntoken = "ci-token-123"\nroles = { team = "write" }\n'
    env = {
        "CONDAPROXY_TOKENS__CI__TOKEN": "rotated-token-456",
        "CONDAPROXY_TOKENS__OPS__TOKEN": "ops-token-789",
        "CONDAPROXY_TOKENS__OPS__ROLES": "*=admin,team=read",
    }
    settings = load(tmp_path, text, env)
    assert settings.tokens["ci"].token.value == "rotated-token-456"
    assert settings.tokens["ci"].roles == {"team": "write"}
    assert settings.tokens["ops"].role_for("other") == "admin"
    assert settings.tokens["ops"].roles["team"] == "read"
    bad = {**env, "CONDAPROXY_TOKENS__OPS__ROLES": "*=root"}
    assert "CONDAPROXY_TOKENS__OPS__ROLES" in refused(tmp_path, text, bad)


def test_errors_never_echo_a_secret(tmp_path):
    message = refused(tmp_path, f"{BASE}upstream_bearer = 123456789\n")
    assert "123456789" not in message


def run_serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "condaproxy", "serve", "--config", str(config), "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("shape", ["a file", "below a file"])
def test_an_unusable_cache_path_is_one_line_naming_the_key(tmp_path, shape):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    path = blocker if shape == "a file" else blocker / "cache"
    config = tmp_path / "proxy.toml"
    config.write_text(f'[cache]\npath = "{path}"\n{BASE}')
    result = run_serve(config)
    assert result.returncode == 2
    assert "'cache.path'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_changed_upstream_takes_over_at_once_after_a_restart(tmp_path, start_proxy):
    """Repodata must come from the new upstream at once, and never be served stale from the
    old one once that is gone (today: revalidated against the URL stored in the index)."""
    old_dir = build_channel(
        tmp_path / "old", tmp_path / "w1", (Pkg("oldpkg", "1.0", "0", "noarch"),)
    )
    new_dir = build_channel(
        tmp_path / "new", tmp_path / "w2", (Pkg("newpkg", "2.0", "0", "noarch"),)
    )
    old, new = Upstream(old_dir).start(), Upstream(new_dir).start()
    cache = tmp_path / "cache"
    try:
        proxy = start_proxy({"ch": {"upstream": old.url}}, ttl=0, cache=cache)
        first = httpx.get(f"{proxy.url}/ch/noarch/repodata.json").json()
        assert "oldpkg-1.0-0.conda" in first["packages.conda"]
        file = httpx.get(f"{proxy.url}/ch/noarch/oldpkg-1.0-0.conda")
        assert file.status_code == 200
        proxy.stop()
        old.stop()  # the old host is gone for good
        proxy = start_proxy({"ch": {"upstream": new.url}}, ttl=0, cache=cache)
        second = httpx.get(f"{proxy.url}/ch/noarch/repodata.json")
        assert second.status_code == 200
        assert second.headers.get("x-cache") != "STALE"
        assert set(second.json()["packages.conda"]) == {"newpkg-2.0-0.conda"}
        # A file cached from the old upstream is not served as the new channel's.
        gone = httpx.get(f"{proxy.url}/ch/noarch/oldpkg-1.0-0.conda")
        assert gone.status_code == 404
        assert any(
            e.get("event") == "channel upstream changed: cache of the old upstream dropped"
            for e in proxy.events()
        )
        # With the new upstream down, nothing from the old one comes back as "stale".
        new.stop()
        down = httpx.get(f"{proxy.url}/ch/noarch/repodata.json")
        assert down.status_code == 200  # the new upstream's copy, stale
        assert set(down.json()["packages.conda"]) == {"newpkg-2.0-0.conda"}
    finally:
        old.stop()
        new.stop()
