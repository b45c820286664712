"""A worker's first request, paid before it comes (issue 14: cold package GET).

A fresh worker used to make its first client wait for what every later request finds ready:
above all the decoded shard index of the package's subdir (25,000 names: 6-13 ms), the
default thread pool that decoding starts, and the idna codec the first connection's address
lookup imports (~1 ms). With several workers, a request often lands on one that has served
nothing yet. `warm_up` runs in the background at start-up (the app's lifespan) and does that
work from what is already on disk, through the request path's own functions:

- it sends nothing upstream and revalidates nothing (an air-gapped site runs with a dead
  upstream), whatever the age of the cached copy: the request path decides about freshness;
- at most `SHARD_MAPS` shard indexes, the most recently fetched, of the subdirs nearly every
  channel has, and for `BUDGET` seconds at most;
- a cached copy it cannot read is left alone for the request path, which handles it as it
  always has; the warm-up only notes it (info) and goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from ..rules.errors import ProxyError
from ..rules.routing import COMMON_SUBDIRS, SHARD_INDEX, parse_path
from ..storage.index import MetaEntry
from ..storage.keys import MetaKey
from .packages import Packages
from .upstream import used

log = structlog.get_logger("condaproxy.cache.warmup")

SHARD_MAPS = 4  # decoded maps kept by the request path: 8 (checksums.py); ~5 MB each
BUDGET = 10.0  # seconds; a warm-up never holds anything up, but it does not linger either


async def warm_up(
    packages: Packages, subdirs: Sequence[str] = COMMON_SUBDIRS, budget: float = BUDGET
) -> list[MetaKey]:
    """Decode the cached shard indexes a first request would; the keys warmed."""
    warmed: list[MetaKey] = []
    try:
        async with asyncio.timeout(budget):
            cached = await asyncio.to_thread(first_uses, packages, subdirs)
            for key, entry in cached[:SHARD_MAPS]:
                try:
                    await packages.checksums.warm(key, entry)
                except (OSError, ValueError) as exc:  # codecs raise ValueError for bad bytes
                    log.info("warm-up skipped a cached shard index", key=str(key), reason=str(exc))
                else:
                    warmed.append(key)
    except TimeoutError:
        log.info("warm-up stopped: out of time", budget=budget, warmed=len(warmed))
    return warmed


def first_uses(packages: Packages, subdirs: Sequence[str]) -> list[tuple[MetaKey, MetaEntry]]:
    """What a first request would pay for in a thread: the index's first reads, and the idna
    codec socket.getaddrinfo loads on its first call (for any host); the shard indexes found."""
    "".encode("idna")
    return cached_shard_indexes(packages, subdirs)


def cached_shard_indexes(
    packages: Packages, subdirs: Sequence[str]
) -> list[tuple[MetaKey, MetaEntry]]:
    """The upstream shard indexes on disk that requests would use as they are (fetched from
    the URL the channel names now), the most recently fetched first."""
    found = []
    for name, channel in packages.channels.items():
        if channel.upstream is None:
            continue
        for subdir in subdirs:
            try:
                rp = parse_path(f"/{name}/{subdir}/{SHARD_INDEX}", packages.channels)
            except ProxyError:
                continue
            key = MetaKey.shard_index(rp.subdir_key)
            entry = packages.index.get_meta(key)
            if entry is None or "body" not in entry.variants:
                continue
            if used(channel, entry.source_url) == packages.url(channel, rp):
                found.append((key, entry))
    return sorted(found, key=lambda item: item[1].fetched_at, reverse=True)
