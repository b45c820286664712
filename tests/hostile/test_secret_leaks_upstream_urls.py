"""A credential in a channel's upstream URL never reaches an error body, a prefetch job or the
log, whatever the form of its userinfo. Only `user:password@` was masked (the password); a
lone `token@` (a token as the user name, which the proxy sends as basic auth, and which
registries such as GitHub's take), an empty password after it (`token:@`) or a password
holding an unencoded `@` showed in every 502 naming the upstream, every 404 "not found
upstream at", the job a prefetch left and each warning in the log. Now the one masking rule
(rules/redact.py) hides a URL's userinfo whole, wherever a URL is rendered.

Real processes: the test upstream, and the proxy in front, with one channel per form of
userinfo on the live upstream (a 404 names it) and on a port nobody listens on (a 502)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.processes import Proxy, free_port

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-leaks-0001"
# How the secret sits in the userinfo; each one is sent upstream as basic auth. Each channel
# has its own secret: one the proxy knows as a password would be masked in every form.
SECRETS = {
    "token-as-user": "Tok3nAsTheUserName9731",
    "token-and-empty-password": "Tok3nBeforeAnEmptyPass8642",
    "password-with-an-at": "PasswordAfterAnAt7531",
    "password": "PlainPasswordHere6420",
}
USERINFO = {
    "token-as-user": "{}@",
    "token-and-empty-password": "{}:@",
    "password-with-an-at": "me:pa@{}@",
    "password": "me:{}@",
}
PATHS = [
    "/linux-64/repodata.json",
    "/noarch/repodata.json.zst",
    "/linux-64/libzlib-1.3-h0.conda",
    "/linux-64/missing-1.0-h0.conda",
    "/channeldata.json",
    "/linux-64/",
    "/linux-64/?name=libzlib",
]


def fragments(secret: str) -> list[str]:
    """The secret, and any 8 characters of it: nothing of it may show."""
    return [secret[i : i + 8] for i in range(len(secret) - 7)]


def assert_hidden(text: str, where: str) -> None:
    for secret in SECRETS.values():
        for piece in fragments(secret):
            assert piece not in text, f"{piece!r} of a credential in {where}: {text[:400]}"


@pytest.fixture
def proxy(upstream, start_proxy) -> Proxy:  # type: ignore[no-untyped-def]
    live = upstream.url.removeprefix("http://")
    dead = f"127.0.0.1:{free_port()}"
    channels: dict[str, dict[str, object]] = {}
    for name, userinfo in USERINFO.items():
        userinfo = userinfo.format(SECRETS[name])
        channels[f"live-{name}"] = {"upstream": f"http://{userinfo}{live}/missing-channel"}
        channels[f"dead-{name}"] = {"upstream": f"http://{userinfo}{dead}/channel"}
    tokens = {"ops": {"token": ADMIN, "roles": {"*": "admin"}}}
    return start_proxy(channels, tokens=tokens, extra='\n[log]\nlevel = "debug"\n')


@pytest.mark.parametrize("state", ["live", "dead"])
@pytest.mark.parametrize("form", list(USERINFO))
def test_error_bodies_and_log_never_show_the_userinfo(proxy: Proxy, form: str, state: str) -> None:
    channel = f"{state}-{form}"
    statuses = set()
    with httpx.Client(timeout=30) as client:
        for path in PATHS:
            response = client.get(f"{proxy.url}/{channel}{path}")
            statuses.add(response.status_code)
            assert_hidden(response.text, f"the body of {path} ({response.status_code})")
            assert_hidden(json.dumps(dict(response.headers)), f"the headers of {path}")
    # The upstream was asked: its failure (a 404 at the live one, a 502 at the dead one) is
    # what the bodies name.
    assert (404 if state == "live" else 502) in statuses, statuses
    events = proxy.events_where(lambda e: e.get("channel") == channel, count=len(PATHS))
    assert len(events) >= len(PATHS)
    assert "***@" in proxy.log()  # the upstream is named, its userinfo masked
    assert_hidden(proxy.log(), "the log")


@pytest.mark.parametrize("form", list(USERINFO))
def test_a_failed_prefetch_job_never_shows_the_userinfo(proxy: Proxy, form: str) -> None:
    headers = {"x-api-key": ADMIN}
    url = f"{proxy.url}/api/cache/dead-{form}/linux-64/prefetch"
    accepted = httpx.post(url, json={"packages": ["libzlib-1.3-h0.conda"]}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 30
    while True:
        stats = httpx.get(f"{proxy.url}/api/cache/stats", headers=headers, timeout=30)
        job = next(j for j in stats.json()["prefetch"] if j["id"] == accepted.json()["id"])
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert job["state"] == "failed", job
    assert "***@" in json.dumps(job)
    assert_hidden(stats.text, "the prefetch job")
    page = httpx.get(f"{proxy.url}/", headers=headers, timeout=30)
    assert_hidden(page.text, "the status page")
    assert_hidden(proxy.log(), "the log")
