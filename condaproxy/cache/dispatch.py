"""The engine's front door: a parsed request in, a typed result out (results.py).

It only decides who answers: an upload, the overlay (a subdir with uploads), the local-only
channel's files, a package or shard (packages.py), or upstream metadata (views.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..rules.errors import NotFound
from ..rules.routing import Kind, ResourcePath, parse_path
from ..settings import ChannelSettings
from ..storage.index import Index
from ..storage.keys import MetaKey
from .overlay import Overlay
from .packages import Packages
from .policing import Policing
from .results import Asked, Result


class Proxy:
    def __init__(
        self,
        channels: Mapping[str, ChannelSettings],
        index: Index,
        packages: Packages,
        overlay: Overlay,
        policing: Policing | None = None,
    ) -> None:
        self.channels = channels
        self.policing = policing  # None when no channel has a policy: nothing else changes
        self.index = index
        self.packages = packages
        self.overlay = overlay
        self.views = packages.views

    async def serve(self, rp: ResourcePath, asked: Asked) -> Result:
        channel = self.channels[rp.channel]
        if self.policing is not None and self.policing.active(rp.channel):
            return await self.policing.serve(
                rp, channel, asked, lambda: self._serve(rp, channel, asked)
            )
        return await self._serve(rp, channel, asked)

    async def _serve(self, rp: ResourcePath, channel: ChannelSettings, asked: Asked) -> Result:
        if rp.kind is Kind.PACKAGE:
            if upload := await self.overlay.upload_hit(channel, rp, asked):
                return upload
            await self.overlay.refuse_hidden(channel, rp)  # an impostor by URL: 404
        if rp.kind in (Kind.REPODATA, Kind.SHARD_INDEX) and self.overlay.covers(channel, rp):
            if rp.kind is Kind.REPODATA:
                return await self.overlay.repodata_result(rp, channel, asked)
            return await self.overlay.shard_index_result(rp, channel)
        if rp.kind is Kind.SHARD and channel.upstream and self.overlay.covers(channel, rp):
            return await self.overlay.shard_result(rp, channel, asked)
        if channel.upstream is None:
            return await self._local_only(rp, channel)
        if rp.kind in (Kind.PACKAGE, Kind.SHARD):
            return await self.packages.serve(rp, channel, asked)
        if rp.kind is Kind.REPODATA:
            return await self.views.repodata_result(rp, channel, asked)
        if rp.kind is Kind.SHARD_INDEX:
            return await self.views.shard_index_result(rp, channel)
        return await self.views.file_result(rp, channel)

    async def _local_only(self, rp: ResourcePath, channel: ChannelSettings) -> Result:
        """A channel served from uploads alone: beyond uploads and merged metadata, only the
        shards derived from its uploads exist."""
        entry = self.index.get_file(rp.key) if rp.kind is Kind.SHARD else None
        if entry is not None and (hit := await self.packages.hit(entry)) is not None:
            return hit
        raise NotFound(f"'{rp.relative}' is not in local channel '{channel.name}'")

    # for prefetch (ops/prefetch.py)

    def _resource(self, channel: str, subdir: str, filename: str) -> ResourcePath:
        return parse_path(f"/{channel}/{subdir}/{filename}", self.channels)

    async def repodata_path(self, channel_name: str, subdir: str) -> Path | None:
        """The repodata.json a client of this channel sees for `subdir` (merged if uploads
        are over it), fetched or revalidated as needed; None if the subdir does not exist."""
        rp = self._resource(channel_name, subdir, "repodata.json")
        channel = self.channels[channel_name]
        try:
            if self.policing is not None and self.policing.active(channel_name):
                served, _ = await self.policing.view(rp, channel)
                key = MetaKey.policy(rp.subdir_key)
                return self.views.meta.readable(key, served.entry.variants["json"])
            if self.overlay.covers(channel, rp):
                await self.overlay.repodata(rp, channel)
                key = MetaKey.merged(rp.subdir_key)
            else:
                await self.views.repodata(rp, channel)
                key = MetaKey.repodata(rp.subdir_key)
        except NotFound:
            return None
        entry = self.index.get_meta(key)
        if entry is None:
            return None
        entry = await self.views.with_json(key, entry)
        return self.views.meta.readable(key, entry.variants["json"])

    async def warm(self, channel_name: str, subdir: str, filename: str) -> str:
        """Make sure a file is in the cache (or is an upload): "hit" if it already was."""
        rp = self._resource(channel_name, subdir, filename)
        channel = self.channels[channel_name]
        if self.policing is not None and self.policing.active(channel_name):
            await self.policing.check_package(rp, channel)
        if self.overlay.upload(channel, rp) is not None:
            return "hit"
        await self.overlay.refuse_hidden(channel, rp)
        return await self.packages.warm(rp, channel)
