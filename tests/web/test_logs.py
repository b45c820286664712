"""The log pipeline in-process: JSON lines (or console text) on stderr with every secret masked,
uvicorn's records through the same processors, an aborted response reported once; and the
access log as the last line of defence (an unexpected failure is a 500 JSON answer and one
error event; metrics that cannot be recorded never fail a request)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
import structlog
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from condaproxy.rules.redact import Redactor
from condaproxy.settings import ChannelSettings
from condaproxy.web import logs
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, services_of, upstream_subdir

SECRET = "s3cret-token-0123"
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def configured() -> Iterator[None]:
    """configure_logging for one test; structlog and uvicorn's loggers as they were after it.
    Only loggers made inside the test are used while it is configured (structlog caches a
    logger on first use)."""
    saved = {n: (logging.getLogger(n).handlers, logging.getLogger(n).propagate) for n in UVICORN}
    try:
        yield
    finally:
        structlog.reset_defaults()
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers = handlers
            logging.getLogger(name).propagate = propagate


def lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_with_every_secret_masked(configured, capsys):
    logs.configure_logging(Redactor([SECRET]), "info", "json")
    log = structlog.get_logger("test")
    log.info("fetched", url=f"https://up.example/t/{SECRET}/cf", note=f"key={SECRET}")
    log.debug("not shown at info")
    logging.getLogger("uvicorn.error").warning("client sent %s", SECRET)
    events = lines(capsys.readouterr().err)
    assert [e["event"] for e in events] == [
        "fetched",
        f"client sent {SECRET}".replace(SECRET, "***"),
    ]
    assert events[0]["url"] == "https://up.example/t/***/cf" and events[0]["note"] == "key=***"
    assert events[0]["level"] == "info" and events[0]["timestamp"].endswith("Z")
    assert events[1]["logger"] == "uvicorn.error" and events[1]["level"] == "warning"
    assert SECRET not in capsys.readouterr().err


def test_an_abort_the_access_log_reported_is_not_logged_again_by_uvicorn(configured, capsys):
    logs.configure_logging(Redactor(), "warning", "json")
    reported, other = RuntimeError("verification failed"), RuntimeError("unexpected")
    setattr(reported, logs._ABORTED, True)
    for exc in (reported, other):
        try:
            raise exc
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    events = lines(capsys.readouterr().err)
    assert len(events) == 1 and "unexpected" in events[0]["exception"]


def test_console_format_for_people_at_a_terminal(configured, capsys):
    logs.configure_logging(Redactor([SECRET]), "debug", "console")
    structlog.get_logger("test").debug("hello", token=SECRET)
    err = capsys.readouterr().err
    assert "hello" in err and SECRET not in err and not err.lstrip().startswith("{")


# the access log


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with respx.mock(assert_all_called=False) as router:
        upstream_subdir(router, "https://up.example/cf", "noarch", {})
        settings = make_settings(
            tmp_path / "cache", [ChannelSettings("cf", "https://up.example/cf")]
        )
        with TestClient(create_app(settings, clock=Clock()), raise_server_exceptions=False) as c:
            yield c


def test_an_unexpected_failure_is_a_500_json_answer_and_one_error_event(client, monkeypatch):
    async def broken(*args: object) -> None:
        raise RuntimeError("engine on fire")

    monkeypatch.setattr(services_of(client.app).proxy, "serve", broken)
    with capture_logs() as events:
        answer = client.get("/cf/noarch/repodata.json", headers={"x-request-id": "req-42"})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "internal error: the proxy failed to answer; see its log",
        "status": 500,
    }
    failed = [e for e in events if e["event"] == "request failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"
    assert failed[0]["error"] == "RuntimeError: engine on fire"
    assert failed[0]["request_id"] == "req-42" and failed[0]["status"] == 500


def test_metrics_that_cannot_be_recorded_never_fail_a_request(client, monkeypatch):
    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logs.AccessLog, "_count", full_disk)
    with capture_logs() as events:
        for _ in range(2):
            assert client.get("/cf/noarch/repodata.json").status_code == 200
    said = [e for e in events if e["event"] == "metrics not recorded"]
    assert len(said) == 1, "said once, not on every request"
    assert said[0]["error"] == "OSError: [Errno 28] No space left on device"
