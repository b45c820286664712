"""A configuration the proxy refuses never prints a credential: the one line that names the
file and the key quoted the value, and a value can hold a secret the key does not announce.
An upstream URL with an anaconda.org `/t/<token>/` path and a query, a fragment, a bad port
or a space was quoted whole (only a URL with `@` was left out); a wrong kind of value (a
list where the upstream URL goes) was quoted as written, password and all; and the value of
an `env:` reference (the way README gives to keep secrets out of the file) was quoted when
it went to a key that could not take it (`private = "env:UPLOAD_TOKEN"`, a copy-paste slip).
Start-up output lands in CI logs and orchestrator events.

Now every quoted value goes through the URL masking rule (userinfo, path token and query
masked; text with spaces not quoted), and a value read through `env:` is never quoted.
Real processes: `condaproxy check-config` and `condaproxy serve`, each must exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

TOKEN = "PathTokenOfTheChannel4826"
PASSWORD = "PasswordOfTheChannel9173"
ENV_SECRET = "UploadTokenFromEnv5039"
ENV = {"UPLOAD_TOKEN": ENV_SECRET, "PRIVATE_UPSTREAM": f"https://h.example/t/{TOKEN}/ch?x=1"}

UP = 'upstream = "https://h.example/ch"'
# A [channels.team] body each.
BAD = {
    "token-path-and-query": f'upstream = "https://conda.anaconda.org/t/{TOKEN}/ch?x=1"',
    "token-path-and-fragment": f'upstream = "https://conda.anaconda.org/t/{TOKEN}/ch#top"',
    "token-path-bad-port": f'upstream = "https://h.example:99999/t/{TOKEN}/ch"',
    "token-path-port-zero": f'upstream = "https://h.example:0/t/{TOKEN}/ch"',
    "token-path-with-a-space": f'upstream = "https://h.example/t/{TOKEN} /ch"',
    "token-in-the-query": f'upstream = "https://h.example/ch?token={TOKEN}"',
    "userinfo-bad-port": f'upstream = "https://me:{PASSWORD}@h.example:99999/ch"',
    "lone-userinfo-port-zero": f'upstream = "https://{TOKEN}@h.example:0/ch"',
    "upstream-as-a-list": f'upstream = ["https://me:{PASSWORD}@h.example/ch"]',
    "upstream-as-a-table": f'upstream = {{ url = "https://h.example/t/{TOKEN}/ch" }}',
    "env-reference-as-a-boolean": f'{UP}\nprivate = "env:UPLOAD_TOKEN"',
    "env-reference-as-a-cooldown": f'{UP}\ncooldown = "env:UPLOAD_TOKEN"',
    "env-reference-as-origins": f'{UP}\nallowed_origins = "env:UPLOAD_TOKEN"',
    "env-reference-as-upload-names": f'{UP}\nallow_upstream = ["env:UPLOAD_TOKEN", 5]',
    "env-reference-upstream": 'upstream = "env:PRIVATE_UPSTREAM"',
}
# Whole sections.
OTHER = {
    "env-reference-as-a-size": '[cache]\nmax_size = "env:UPLOAD_TOKEN"',
    "env-reference-as-a-port": '[server]\nport = "env:UPLOAD_TOKEN"',
    "env-reference-as-a-timeout": '[upstream]\nread_timeout = "env:UPLOAD_TOKEN"',
    "env-reference-as-external-url": '[server]\nexternal_url = "env:UPLOAD_TOKEN"',
    "env-reference-as-a-proxy-list": '[server]\ntrusted_proxies = "env:UPLOAD_TOKEN"',
    "env-reference-as-a-policy-age": '[policy]\ncooldown = "env:UPLOAD_TOKEN"',
    "external-url-userinfo": f'[server]\nexternal_url = "https://me:{PASSWORD}@proxy.example"',
    "external-url-query": f'[server]\nexternal_url = "https://proxy.example/?t={TOKEN}"',
    "roles-from-env": '[tokens.ci]\ntoken = "ci-token-0000000001"\nroles = "env:UPLOAD_TOKEN"',
}
CASES = {**{k: f"[channels.team]\n{v}\n" for k, v in BAD.items()}, **OTHER}


def run(tmp_path: Path, command: str, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "proxy.toml"
    cache = f'path = "{tmp_path / "cache"}"'
    if "[cache]" in text:
        config.write_text(text.replace("[cache]", f"[cache]\n{cache}") + "\n")
    else:
        config.write_text(f"[cache]\n{cache}\n{text}\n")
    args = [sys.executable, "-m", "condaproxy", command, "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAPROXY_")}
    return subprocess.run(
        args, cwd=ROOT, env={**env, **ENV}, capture_output=True, text=True, timeout=60
    )


def fragments(secret: str) -> list[str]:
    return [secret[i : i + 8] for i in range(len(secret) - 7)]


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_config_never_prints_a_secret(tmp_path: Path, case: str, command: str) -> None:
    done = run(tmp_path, command, CASES[case])
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "config error" in output and "Traceback" not in output, output
    for secret in (TOKEN, PASSWORD, ENV_SECRET):
        for piece in fragments(secret):
            assert piece not in output, f"{piece!r} of a secret printed: {output}"
