"""The small exception tree of condaproxy, translated to HTTP in one place (app.py)."""

from __future__ import annotations

import errno
from typing import Any

from .redact import mask_urls

# A disk that cannot take more bytes: full, or over its quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk is full (an OSError with ENOSPC or EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


class ProxyError(Exception):
    """Base: a status, a message that says what failed, and extra JSON fields."""

    status = 500
    headers: dict[str, str] = {}  # noqa: RUF012 - per-class response headers, never mutated

    def __init__(self, message: str, **extra: Any) -> None:
        # Whatever renders it (an error body, a log event, a prefetch job, an audit line), a
        # message holds no credential a URL or path in it carried: masked here, once
        # (rules/redact.py; the proxy's known secrets are masked again where it is sent).
        message = mask_urls(message)
        super().__init__(message)
        self.message = message
        self.extra = {k: mask_urls(v) if isinstance(v, str) else v for k, v in extra.items()}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status, **self.extra}


class BadRequest(ProxyError):
    status = 400


class MethodNotAllowed(ProxyError):
    """405, with the `Allow` header RFC 9110 section 15.5.6 requires: the methods that are."""

    status = 405

    def __init__(self, method: str, allowed: tuple[str, ...] = ("GET", "HEAD")) -> None:
        super().__init__(f"{method} is not allowed here; use {' or '.join(allowed)}")
        self.headers = {"allow": ", ".join(allowed)}


class RequestTimeout(ProxyError):
    """408: the client stopped sending its body."""

    status = 408


class PayloadTooLarge(ProxyError):
    status = 413


class URITooLong(ProxyError):
    status = 414


class ServiceUnavailable(ProxyError):
    """503: the proxy cannot build this answer right now (the cause is in the log)."""

    status = 503


class InsufficientStorage(ProxyError):
    """507 (RFC 4918 §11.5): the proxy's disk cannot take what this request must store (an
    upload); nothing of it was kept."""

    status = 507


class NotFound(ProxyError):
    """Anything not served answers 404: conda clients treat 403/5xx as fatal (PROTOCOL.md)."""

    status = 404


class RangeNotSatisfiable(ProxyError):
    status = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"requested range is outside the file's {size} bytes", size=size)
        self.size = size


class UpstreamError(ProxyError):
    """The upstream failed (connection refused, 5xx, bad body); the message names it."""

    status = 502

    def __init__(self, upstream: str, reason: str) -> None:
        upstream, reason = mask_urls(upstream), mask_urls(reason)
        super().__init__(f"upstream {upstream} failed: {reason}", upstream=upstream)
        self.upstream = upstream
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Raised in the worker process too: pickle with the constructor's own arguments.
        return (self.__class__, (self.upstream, self.reason))


class UpstreamRefused(UpstreamError):
    """The upstream answered with an HTTP error status (not 404/410, not "not now"): `code`
    is that status, for the callers that must tell "this file is not served here" from an
    upstream that is broken (conditional.lacks_variant)."""

    def __init__(self, upstream: str, reason: str, code: int) -> None:
        super().__init__(upstream, reason)
        self.code = code

    def __reduce__(self) -> tuple[type, tuple[str, str, int]]:  # type: ignore[override]
        return (self.__class__, (self.upstream, self.reason, self.code))


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamNotFound(NotFound):
    """The upstream answered 404 for this resource."""

    def __init__(self, upstream: str) -> None:
        super().__init__(f"not found upstream at {upstream}", upstream=upstream)
        self.upstream = mask_urls(upstream)


class IntegrityError(UpstreamError):
    """The upstream's bytes do not match the checksum or size the channel publishes."""


class UpstreamBusy(UpstreamError):
    """The upstream said "not now" (429 Too Many Requests, 503 Service Unavailable). Like any
    upstream failure it is a 502 naming the upstream (a client must be able to tell the
    proxy's own unavailability from its upstream's), and it carries the upstream's
    Retry-After when it gave one, so a client or operator knows when to try again."""

    def __init__(self, upstream: str, reason: str, retry_after: int | None = None) -> None:
        super().__init__(upstream, reason)
        self.retry_after = retry_after
        self.headers = {"retry-after": str(retry_after)} if retry_after is not None else {}

    def __reduce__(self) -> tuple[type, tuple[str, str, int | None]]:  # type: ignore[override]
        return (self.__class__, (self.upstream, self.reason, self.retry_after))


def local_disk_answer(exc: OSError) -> ServiceUnavailable:
    """What a client gets when the cache's disk or index failed under an answer (full, locked,
    an I/O error, a read-only or vanished filesystem): a 503 to retry, never a 500. The body
    says what failed, not where (the path and errno go to the log)."""
    if disk_full(exc):
        return disk_full_answer(exc)
    return ServiceUnavailable(
        f"the proxy's cache disk failed ({exc.strerror or type(exc).__name__}); retry later"
    )


def disk_full_answer(exc: OSError) -> ServiceUnavailable:
    """What a client gets when the cache's disk (or its index) could not take a write this
    answer needed: a 503 to retry, never a 500 (the cause goes to the log)."""
    return ServiceUnavailable(
        f"the proxy's cache disk is full ({exc.strerror or exc}); retry later"
    )
