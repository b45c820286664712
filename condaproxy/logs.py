"""structlog set-up and the access log: one event per request, secrets masked everywhere."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog

from .metrics import Metrics
from .redact import Redactor

_CACHED = {"hit", "revalidated", "stale"}


def configure_logging(redact: Redactor, level: str = "info", json: bool | None = None) -> None:
    """JSON lines when stderr is not a terminal (containers, CI), readable text otherwise."""
    as_json = not sys.stderr.isatty() if json is None else json

    def mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value)
        return event

    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json)
        if as_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _json(event: Any, **_: Any) -> str:
    # msgspec encodes an access line several times faster than json.dumps: every hit logs one.
    return _ENCODER.encode(event).decode()


_ENCODER = msgspec.json.Encoder(enc_hook=str)  # anything unexpected is logged as text
access_log = structlog.get_logger("condaproxy.access")


class AccessLog:
    """ASGI middleware: status, bytes, duration and the cache outcome of every request."""

    def __init__(self, app: Any, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[Any, ...], Any] = {}  # labelled metrics, labels are bounded

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0
        state = scope.setdefault("state", {})

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, receive, counting_send)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if self.metrics is not None:
                self._count(scope["path"], state, status, sent)
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                channel=state.get("channel"),
                status=status,
                bytes=sent,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                cache=state.get("outcome"),
                **({"error": error} if error else {}),
            )

    def _count(self, path: str, state: dict[str, Any], status: int, sent: int) -> None:
        assert self.metrics is not None
        kind = state.get("kind") or ("api" if path.startswith(("/api/", "/t/")) else "other")
        self._child(self.metrics.requests, kind, str(status)).inc()
        channel, outcome = state.get("channel"), state.get("outcome")
        if channel and outcome:
            self._child(self.metrics.outcomes, channel, outcome).inc()
            source = "cache" if outcome in _CACHED else "upstream"
            self._child(self.metrics.bytes_served, channel, source).inc(sent)
