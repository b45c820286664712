"""What an operator reads in the log: client address, user agent and request id on every access
event, and an audit event for every change a token makes."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

ADMIN = "admin-token-123"


def test_access_events_carry_client_agent_and_request_id(upstream, start_proxy):
    proxy = start_proxy(
        {"local": {"upstream": upstream.url}},
        extra='[server]\ntrusted_proxies = ["127.0.0.1"]\n',
    )
    response = httpx.get(
        f"{proxy.url}/local/noarch/repodata.json",
        headers={
            "user-agent": "conda/26.7.0 requests/2.32",
            "x-forwarded-for": "203.0.113.9",
            "x-request-id": "ci-run-42",
        },
    )
    assert response.headers["x-request-id"] == "ci-run-42"
    (event,) = proxy.events_where(lambda e: e.get("path") == "/local/noarch/repodata.json")
    assert event["client"] == "203.0.113.9"
    assert event["user_agent"].startswith("conda/26.7.0")
    assert event["request_id"] == "ci-run-42"
    other = httpx.get(f"{proxy.url}/healthz")
    assert len(other.headers["x-request-id"]) == 16


def test_every_purge_and_prefetch_leaves_an_audit_event(upstream, start_proxy):
    tokens = {"ops": {"token": ADMIN, "roles": {"*": "admin"}}}
    proxy = start_proxy({"local": {"upstream": upstream.url}}, tokens=tokens)
    assert (
        httpx.delete(f"{proxy.url}/api/cache/local", headers={"x-api-key": ADMIN}).status_code
        == 200
    )
    assert httpx.delete(f"{proxy.url}/api/cache/local").status_code == 401
    body = {"packages": ["pyutil-0.4-pyh0.conda"]}
    url = f"{proxy.url}/api/cache/local/noarch/prefetch"
    assert httpx.post(url, json=body, headers={"x-api-key": ADMIN}).status_code == 202
    audits = proxy.events_where(lambda e: e.get("event") == "audit", count=3)
    assert [(a["action"], a["token"]) for a in audits] == [
        ("purge", "ops"),
        ("purge", "-"),
        ("prefetch", "ops"),
    ]
    assert audits[0]["result"] == "ok" and audits[1]["result"].startswith("refused 401")


def test_nothing_plain_text_is_interleaved_with_the_json_log(upstream, start_proxy):
    proxy = start_proxy({"local": {"upstream": upstream.url}}, workers=2)
    httpx.get(f"{proxy.url}/local/noarch/repodata.json")
    proxy.stop()  # uvicorn's own shutdown messages go through the same pipeline
    lines = [line for line in proxy.log().splitlines() if line.strip()]
    assert lines and all(line.startswith("{") and line.endswith("}") for line in lines), lines
