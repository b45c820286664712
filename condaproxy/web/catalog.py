"""Where the browsing pages' data comes from: a subdir's listing and one name's files, read
through the engine's front door (cache/dispatch.Proxy) as a client's request would, so a page
sees what clients see (uploads merged in) and costs no more than their requests do.

The shard index is tried first (a few MB; a 404 means the channel has none), else the
subdir's repodata.json. A listing is made once per snapshot (keyed by its ETag or the
snapshot's file, which is named by content) and at most PARALLEL listings or scans run at a
time, in a worker thread or, for a big document, the worker process.
"""

from __future__ import annotations

import asyncio
import os

from ..cache.results import Asked, Result, Stored, Streamed
from ..cache.transfer import ClientAbort, bytes_of
from ..cache.workers import BIG
from ..ops.listing import (
    FileRow,
    Listing,
    Memo,
    repodata_listing,
    scan_repodata,
    shard_index_listing,
    shard_rows,
)
from ..rules.codecs import SHARD_LIMIT
from ..rules.errors import NotFound, ServiceUnavailable, UpstreamError
from ..rules.routing import SHARD_INDEX, Kind, ResourcePath
from ..settings import ChannelSettings, Settings
from .services import Services

PARALLEL = 2


async def read_result(result: Result, limit: int) -> bytes:
    """The whole body of an engine result (a metadata variant or a shard), at most `limit`."""
    if isinstance(result, Streamed):
        body, pieces, total = result.body, [], 0
        if body is None:
            return b""
        try:
            async for chunk in body.chunks(0, result.head.size):
                total += len(chunk)
                if total > limit:
                    raise ServiceUnavailable(f"a metadata file is larger than {limit} bytes")
                pieces.append(bytes_of(chunk))
        except ClientAbort as exc:  # its download failed midway: the page cannot be made
            raise UpstreamError("of this channel", str(exc)) from None
        finally:
            await body.aclose()
        return b"".join(pieces)
    if result.size > limit:
        raise ServiceUnavailable(f"a metadata file is larger than {limit} bytes")
    fd = result.open()
    if result.on_open is not None:
        result.on_open()
    try:
        data = await asyncio.to_thread(os.pread, fd, result.size, 0)
    finally:
        os.close(fd)
        if result.on_close is not None:
            result.on_close()
    if len(data) != result.size:
        raise ServiceUnavailable("a metadata file changed while it was read; reload")
    return data


def release(result: Result) -> None:
    if isinstance(result, Stored) and result.fd is not None:
        os.close(result.fd)
        result.fd = None


class Catalog:
    """Listings and one name's files, kept per snapshot (ops/listing.Memo)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.listings: Memo[Listing] = Memo(8)
        self.files: Memo[tuple[list[FileRow], bool]] = Memo(32)
        self._work = asyncio.Semaphore(PARALLEL)

    async def listing(self, services: Services, channel: ChannelSettings, subdir: str) -> Listing:
        """The names of the subdir as clients see it: from shards if it has them."""
        rp = ResourcePath(channel.name, "", subdir, SHARD_INDEX, Kind.SHARD_INDEX)
        limit = self.settings.cache.max_repodata_size
        try:
            result = await services.proxy.serve(rp, Asked({}, "GET"))
        except NotFound:
            result = None
        if result is not None:
            key = ("shards", channel.name, subdir, getattr(result, "etag", None))
            if (known := self.listings.peek(key)) is not None:
                release(result)
                return known

            async def from_shards() -> Listing:
                async with self._work:
                    data = await read_result(result, limit)
                    return await services.workers.run(False, shard_index_listing, data, limit)

            try:
                return await self.listings.get(key, from_shards)
            finally:
                release(result)
        path = await services.proxy.repodata_path(channel.name, subdir)
        if path is None:
            raise NotFound(f"channel '{channel.name}' has no packages for {subdir}")

        async def from_repodata() -> Listing:
            async with self._work:
                big = os.path.getsize(path) > BIG
                return await services.workers.run(big, repodata_listing, str(path))

        try:
            return await self.listings.get(("repodata", str(path)), from_repodata)
        except FileNotFoundError:
            raise ServiceUnavailable(
                "the subdir's metadata changed while it was read; reload"
            ) from None

    async def package_files(
        self, services: Services, channel: ChannelSettings, subdir: str, listing: Listing, name: str
    ) -> tuple[list[FileRow], bool]:
        if listing.source == "shards":
            digest = listing.shards[name]
            rp = ResourcePath(channel.name, "", subdir, f"{digest}.msgpack.zst", Kind.SHARD)

            async def from_shard() -> tuple[list[FileRow], bool]:
                async with self._work:
                    data = await read_result(
                        await services.proxy.serve(rp, Asked({}, "GET")), SHARD_LIMIT
                    )
                    return await asyncio.to_thread(shard_rows, data, name, SHARD_LIMIT), False

            return await self.files.get(("shard", digest, name), from_shard)
        path = listing.path or ""

        async def scanned() -> tuple[list[FileRow], bool]:
            async with self._work:
                big = os.path.getsize(path) > BIG
                return await services.workers.run(big, scan_repodata, path, name)

        try:
            return await self.files.get(("scan", path, name), scanned)
        except FileNotFoundError:
            raise ServiceUnavailable(
                "the subdir's metadata changed while it was read; reload"
            ) from None
