"""structlog set-up and the access log: one event per request, secrets masked everywhere.

Errors are events, not tracebacks: a request the proxy refuses or cannot complete is one
structured event with its cause. uvicorn's own messages go through the same pipeline (so no
plain text is interleaved with JSON), and its "Exception in ASGI application" record is dropped
for a response we aborted on purpose (a body that failed verification must cut the connection,
which only an exception does) since the access event already says why.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, MutableMapping
from typing import Any, TypeVar

import msgspec
import structlog

from ..cache.instruments import Metrics
from ..rules.errors import ProxyError
from ..rules.forwarded import Network, client_address, request_id
from ..rules.redact import Redactor, masked_path
from .zerocopy import EXTENSION as ZERO_COPY

_CACHED = {"hit", "revalidated", "stale"}
# Answers clients meet in normal use (probing for shards, asking before authenticating).
_ROUTINE = {401, 404, 416}
_ABORTED = "_condaproxy_aborted"  # set on an exception whose abort the access log reported


class _RequestIds:
    """Our request ids: 16 hex digits, a random prefix per process and a counter, unique
    without a getrandom() call (which releases the GIL) on every request."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # a forked child: its own prefix

    def reset(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._count = 0

    def next(self) -> str:
        self._count = (self._count + 1) & 0xFFFFFFFF
        return f"{self._prefix}{self._count:08x}"


_request_ids = _RequestIds()


def configure_logging(redact: Redactor, level: str = "info", fmt: str = "auto") -> None:
    """`[log] format`: JSON lines, readable console text, or (auto) JSON unless stderr is a
    terminal (containers and CI get JSON)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())

    def masked(key: str, value: Any) -> Any:
        if isinstance(value, str):
            return _bounded(key, redact(value))
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, list | tuple):
            return [masked(key, v) for v in value]
        if isinstance(value, dict):
            return {k: masked(key, v) for k, v in value.items()}
        # Anything else (an exception, a URL object) is rendered as text: masked like text,
        # not after masking by the JSON encoder's str().
        return _bounded(key, redact(str(value)))

    def mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            event[key] = masked(key, value)
        return event

    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json)
        if as_json
        else structlog.dev.ConsoleRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, mask, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's records (uvicorn's) rendered by the same processors.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask,
                renderer,
            ],
        )
    )
    handler.addFilter(_drop_reported_aborts)
    handler.addFilter(_drop_causeless_refusals)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        stdlib = logging.getLogger(name)
        stdlib.handlers = [handler]
        stdlib.propagate = False


# A field a client can fill (the path of a request with a 60 KiB path, say) is cut here, after
# masking (so no secret is cut in half and left unmasked): one request, one short line.
# Tracebacks keep their length: they are ours.
MAX_FIELD = 2048


def _bounded(key: str, value: str) -> str:
    if len(value) <= MAX_FIELD or key == "exception":
        return value
    return f"{value[:MAX_FIELD]}...({len(value)} characters)"


def _drop_reported_aborts(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not (exc is not None and getattr(exc, _ABORTED, False))


# uvicorn's line for a request its parser refused; the connection logs the refusal itself,
# with its cause, as a `malformed request` warning (web/connection.py).
_UVICORN_REFUSAL = "Invalid HTTP request received."


def _drop_causeless_refusals(record: logging.LogRecord) -> bool:
    return not (record.name == "uvicorn.error" and record.getMessage() == _UVICORN_REFUSAL)


def _json(event: Any, **_: Any) -> str:
    # msgspec encodes an access line several times faster than json.dumps: every hit logs one.
    return _ENCODER.encode(event).decode()


_ENCODER = msgspec.json.Encoder(enc_hook=str)  # anything unexpected is logged as text
access_log = structlog.get_logger("condaproxy.access")
_audit_log = structlog.get_logger("condaproxy.audit")
T = TypeVar("T")


async def audited(action: str, token: str | None, target: str, call: Awaitable[T]) -> T:
    """Run an operation that changes what the proxy holds (upload, delete, purge, prefetch)
    and leave one `audit` event: which token, what, and how it ended."""
    try:
        result = await call
    except ProxyError as exc:
        outcome = f"refused {exc.status}: {exc.message}"
        _audit_log.info("audit", action=action, token=token or "-", target=target, result=outcome)
        raise
    _audit_log.info("audit", action=action, token=token or "-", target=target, result="ok")
    return result


INTERNAL_ERROR = b'{"error":"internal error: the proxy failed to answer; see its log","status":500}'


class AccessLog:
    """ASGI middleware: status, bytes, duration and the cache outcome of every request, at a
    level that follows the outcome (5xx and aborted responses are warnings with their cause).

    It is also the last line of defence: an exception before the response started becomes a
    500 JSON answer and an error event; after it started, the connection is aborted (never a
    complete wrong body) and the event says why."""

    def __init__(
        self, app: Any, metrics: Metrics | None = None, trusted_proxies: tuple[Network, ...] = ()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted = trusted_proxies
        self._children: dict[tuple[Any, ...], Any] = {}  # labelled metrics, labels are bounded
        self._metrics_failed = False
        self.header_timeout: float | None = None  # server.header_timeout (web/connection.py)
        self.send_timeout: float | None = None  # server.send_timeout (web/connection.py)

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
        given = _header(scope, b"x-request-id")
        state["request_id"] = rid = request_id(given, _request_ids.next())
        rid_header = (b"x-request-id", rid.encode())

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == ZERO_COPY:  # a stored file's bytes by sendfile
                sent += message["count"]
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, counting_send)
        except Exception as exc:
            failure = exc
            if status:
                setattr(exc, _ABORTED, True)
                raise  # the server aborts the connection: the client sees an incomplete body
            status = 500
            await _send_internal_error(send)
        except BaseException as exc:  # cancellation, shutdown: report and let it go on
            failure = exc
            raise
        finally:
            self._finish(scope, state, status, sent, started, failure)

    def _finish(
        self,
        scope: dict[str, Any],
        state: dict[str, Any],
        status: int,
        sent: int,
        started: float,
        failure: BaseException | None,
    ) -> None:
        if self.metrics is not None:
            try:
                self._count(scope["path"], state, status, sent)
            except Exception as exc:  # metrics must never fail a request (e.g. a full disk)
                if not self._metrics_failed:
                    access_log.error("metrics not recorded", error=f"{type(exc).__name__}: {exc}")
                self._metrics_failed = True
        headers = {"x-forwarded-for": _header(scope, b"x-forwarded-for") or ""}
        peer = scope.get("client")
        fields: dict[str, Any] = {
            "method": scope["method"],
            "path": _shown_path(scope),
            "client": client_address(peer[0] if peer else None, headers, self.trusted),
            "user_agent": (_header(scope, b"user-agent") or "")[:200],
            "request_id": state.get("request_id"),
            "channel": state.get("channel"),
            "status": status,
            "bytes": sent,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "cache": state.get("outcome"),
        }
        if state.get("error"):
            fields["error"] = state["error"]
        if failure is not None:
            fields["error"] = f"{type(failure).__name__}: {failure}"
        if failure is not None and status == 500 and not state.get("error"):
            access_log.error("request failed", **fields, exc_info=failure)
        elif failure is not None:
            access_log.warning("response aborted", **fields)
        elif status >= 500 or (
            status >= 400 and status not in _ROUTINE and not state.get("reported")
        ):
            access_log.warning("request", **fields)  # refused or failed: the cause is in it
        else:
            access_log.info("request", **fields)

    def _count(self, path: str, state: dict[str, Any], status: int, sent: int) -> None:
        assert self.metrics is not None
        kind = state.get("kind") or ("api" if path.startswith(("/api/", "/t/")) else "other")
        self._child(self.metrics.requests, kind, str(status)).inc()
        channel, outcome = state.get("channel"), state.get("outcome")
        if channel and outcome:
            self._child(self.metrics.outcomes, channel, outcome).inc()
            source = "cache" if outcome in _CACHED else "upstream"
            self._child(self.metrics.bytes_served, channel, source).inc(sent)


def _shown_path(scope: dict[str, Any]) -> str:
    """The request's path with a `/t/<token>/` segment masked whole, read from the bytes the
    client sent (see rules/redact.masked_path)."""
    raw = scope.get("raw_path")
    path: str = scope["path"]
    return masked_path(raw.decode("latin-1"), path) if isinstance(raw, bytes) else path


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_internal_error(send: Any) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(INTERNAL_ERROR)),
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": INTERNAL_ERROR})
