"""Views that must never fall back to what they hide: a merged view (the unmerged upstream would
re-open dependency confusion) and a policy view (the unfiltered one would serve what the policy
holds back). If one cannot be built, the client gets a 503 to retry and the log says why; a
`ProxyError` (an answer the client should see as it is) passes through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from ..rules.errors import ProxyError, ServiceUnavailable
from ..storage.index import MetaEntry
from ..storage.keys import MetaKey

log = structlog.get_logger("condaproxy.cache.fail_closed")


async def built_or_503(
    what: str, key: MetaKey, build: Callable[[], Awaitable[MetaEntry]]
) -> MetaEntry:
    """`build()`, or a 503 naming the `what` ("merged view", "policy view") and `key`; the
    failure is one error event, `"<what> failed"`, with its cause."""
    try:
        return await build()
    except ProxyError:
        raise
    except Exception as exc:
        log.error(f"{what} failed", key=str(key), cause=f"{type(exc).__name__}: {exc}")
        raise ServiceUnavailable(
            f"the {what} {key.path} cannot be built right now; "
            "retry later (the cause is in the proxy's log)"
        ) from None
