"""Redis/Valkey ([cluster] redis_url): leases for single flight across replicas, and notices
that make upload changes visible at once. Optional, and only ever an optimisation:

- A lease guards efficiency, never correctness (blobs are verified and content-addressed, so
  two holders only cost a duplicate download; manifests are protected by the bucket's
  conditional writes, not by leases). So one Redis is enough: no Redlock, no fencing token.
- Notices are at most once (Redis pub/sub); the manifest poll stays the upper bound.
- Redis down or slow (0.5 s socket timeout): every call answers as if there were no Redis
  (a "lease" that holds nothing, no notice), for `DOWN_FOR` seconds before trying again. The
  cluster then degrades to one download per replica and poll-bound visibility.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("condaproxy.cache.coordination")

DOWN_FOR = 5.0
# Extends or deletes the lease only while it is still ours (another holder may have it now).
_IF_OURS = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call({}) else return 0 end"
_RENEW = _IF_OURS.format("'pexpire', KEYS[1], ARGV[2]")
_RELEASE = _IF_OURS.format("'del', KEYS[1]")


class Lease:
    """Held until released (renewed every third of its time meanwhile). `held` is False for
    the stand-in handed out while Redis is down: releasing it does nothing."""

    def __init__(
        self, coordinator: Coordinator | None, key: str, ttl: float, peer_url: str = ""
    ) -> None:
        self.coordinator = coordinator
        self.key = key
        # The value: a token only this holder knows, then where other replicas can read the
        # download from while it runs (empty: they wait for the bucket's copy).
        self.token = f"{secrets.token_hex(12)} {peer_url}".rstrip()
        self.ttl_ms = int(ttl * 1000)
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self.coordinator is not None

    def start_renewing(self) -> None:
        if self.coordinator is not None:
            self._renewer = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        assert self.coordinator is not None
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            await self.coordinator.call("eval", _RENEW, 1, self.key, self.token, self.ttl_ms)

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self.coordinator is not None:
            await self.coordinator.call("eval", _RELEASE, 1, self.key, self.token)
            self.coordinator = None


class Coordinator:
    def __init__(
        self, url: str, namespace: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        import redis.asyncio

        self._redis: Any = redis.asyncio.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, retry_on_timeout=False
        )
        self.ns = f"condaproxy:{namespace}"
        self.clock = clock
        self._down_until = 0.0
        self.last_error = ""

    @property
    def up(self) -> bool:
        return self.clock() >= self._down_until

    async def call(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """One Redis command; None (and Redis marked down) if it fails."""
        if not self.up:
            return None
        try:
            return await getattr(self._redis, command)(*args, **kwargs)
        except Exception as exc:  # redis-py raises its own errors and OSError alike
            self._mark_down(exc)
            return None

    def _mark_down(self, exc: BaseException) -> None:
        if self.up:
            log.warning("coordination degraded: redis unavailable", error=type(exc).__name__)
        self.last_error = type(exc).__name__
        self._down_until = self.clock() + DOWN_FOR

    async def lease(
        self, name: str, ttl: float, peer_url: str = "", renew: bool = True
    ) -> Lease | None:
        """A lease on `name` (renewed while held, unless `renew` is False: then it just runs
        out); None while another replica holds it. With Redis down, a stand-in that holds
        nothing (the caller goes ahead: single flight per replica)."""
        lease = Lease(self, f"{self.ns}:lease:{name}", ttl, peer_url)
        won = await self.call("set", lease.key, lease.token, px=lease.ttl_ms, nx=True)
        if won:
            if renew:
                lease.start_renewing()
            return lease
        if not self.up:
            return Lease(None, lease.key, ttl)
        return None

    async def holder(self, name: str) -> str:
        """The peer URL the holder of lease `name` serves its download at ("" if none)."""
        value = await self.call("get", f"{self.ns}:lease:{name}")
        if not isinstance(value, bytes):
            return ""
        return value.decode("utf-8", "replace").partition(" ")[2]

    async def publish(self, message: str) -> None:
        await self.call("publish", f"{self.ns}:events", message)

    async def listen(self, handle: Callable[[str], None]) -> None:
        """Deliver every notice to `handle`, for ever; reconnect after a failure."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(f"{self.ns}:events")
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            handle(message["data"].decode("utf-8", "replace"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._mark_down(exc)
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()
