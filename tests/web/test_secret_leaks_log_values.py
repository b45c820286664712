"""Every value of a log event is masked, not only the text ones: an exception, a URL object, a
list or a mapping given as a field was rendered by the JSON encoder's str() after the masking
step had passed over it (it looked only at str values), so a credential it held reached the
log in clear. Values of any type now go through the same masking."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

from condaproxy.rules.errors import ProxyError
from condaproxy.rules.redact import Redactor
from condaproxy.web import logs

SECRET = "KnownSecretValue0042"
URL = f"https://me:{SECRET}@up.example/t/{SECRET}/ch?sig={SECRET}"
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def configured() -> Iterator[None]:
    saved = {n: (logging.getLogger(n).handlers, logging.getLogger(n).propagate) for n in UVICORN}
    try:
        yield
    finally:
        structlog.reset_defaults()
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers = handlers
            logging.getLogger(name).propagate = propagate


VALUES = {
    "exception": RuntimeError(f"failed at {URL}"),
    "os-error": OSError(2, "missing", URL),
    "url-object": httpx.URL(URL),
    "path": Path(f"/cache/{SECRET}"),
    "list": [URL, 1],
    "tuple": (URL,),
    "nested": {"where": {"url": URL}},
    "bytes": URL.encode(),
    "proxy-error-object": ProxyError(f"upstream {URL} failed"),
}


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("kind", list(VALUES))
def test_a_value_of_any_type_is_masked(configured, capsys, kind: str, fmt: str) -> None:
    logs.configure_logging(Redactor([SECRET]), "info", fmt)
    structlog.get_logger("test").warning("something", value=VALUES[kind])
    err = capsys.readouterr().err
    assert "something" in err
    assert SECRET not in err and SECRET[:10] not in err, err
    if fmt == "json":
        json.loads(err.strip().splitlines()[-1])  # still one JSON event per line
