"""Uploads over the upstream, as clients see them: which subdirs are overlaid, uploaded files
served as hits, and the merged repodata and shard index (built by merging.py).

Shadowing (dependency confusion) is decided by the merge rules (rules/merge.py); this module
only makes sure a subdir with uploads is never answered from the upstream view alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
import zstandard
from cachetools import LRUCache

from ..rules.codecs import decode_msgpack, zstd_decompress
from ..rules.errors import NotFound, UpstreamError
from ..rules.merge import Record
from ..rules.routing import Kind, ResourcePath
from ..rules.shadowing import hides
from ..settings import ChannelSettings
from ..storage.index import FileEntry
from ..storage.keys import MetaKey
from ..storage.uploads import UploadStore
from .checksums import client_claim, reconcile
from .hidden import HiddenFiles, fingerprint
from .merging import Merger, decode_shard
from .metadata import Served
from .packages import Packages
from .results import Asked, Result, Stored
from .transfer import Expected, content_type
from .views import SHARD_TYPE, Views

log = structlog.get_logger("condaproxy.cache.overlay")


class Overlay:
    def __init__(self, uploads: UploadStore, merger: Merger, packages: Packages) -> None:
        self.uploads = uploads
        self.merger = merger
        self.packages = packages
        self.views: Views = packages.views
        self.hidden = HiddenFiles(uploads, packages)
        # Upstream shards checked and found clean, by uploads generation (a shard is immutable:
        # its name is its sha256).
        self._clean_shards: LRUCache[tuple[str, str], bool] = LRUCache(maxsize=4096)

    def covers(self, channel: ChannelSettings, rp: ResourcePath) -> bool:
        """A local-only channel is all overlay. With uploads in any subdir, every subdir is
        merged: their names hide upstream records in all of them (HiddenFiles.shadow). Under
        every label too: uploads live at the channel root, so a label's views hold no local
        records, but the uploaded names hide the upstream's there as well (a client of
        `team/label/main`, or of `team` and `team/label/dev` together, must not solve to an
        impostor published upstream under a label)."""
        if rp.subdir is None or channel.mirror_only:
            return False
        if rp.prefix and channel.upstream is None:
            return False  # a local-only channel has no labels
        return channel.upstream is None or bool(self.uploads.subdirs(channel.name))

    def upload(self, channel: ChannelSettings, rp: ResourcePath) -> FileEntry | None:
        """The uploaded file by this name, if any (uploads shadow the upstream's file)."""
        if channel.mirror_only or rp.prefix or rp.subdir is None:
            return None
        upload = self.uploads.get(channel.name, rp.subdir, rp.filename)
        if upload is None:
            return None
        return FileEntry(upload.sha256, upload.size, upload.uploaded_at, content_type(rp.filename))

    async def upload_hit(
        self, channel: ChannelSettings, rp: ResourcePath, asked: Asked
    ) -> Stored | None:
        """An uploaded file by this name, served from the upload store. A client expecting other
        bytes (the record it read before the file was replaced with force=true) gets a 409
        naming the sha256 published now, as for an upstream file."""
        entry = self.upload(channel, rp)
        if entry is None:
            return None
        reconcile(rp.key, Expected(sha256=entry.sha256), client_claim(asked.headers))
        return await self.packages.hit(entry, self.uploads.blobs)

    async def refuse_hidden(self, channel: ChannelSettings, rp: ResourcePath) -> None:
        """An upstream file the uploads hide from the merged views (rules/shadowing.py) is not
        served by URL either: 404 (hidden.py)."""
        await self.hidden.refuse(channel, rp)

    async def shard_result(
        self, rp: ResourcePath, channel: ChannelSettings, asked: Asked
    ) -> Result:
        """A shard through a subdir with uploads. The merged index points local names at their
        merged shards, every other name at the upstream's shard; an upstream shard is named by
        a package name but holds records of any `name`, and the index cannot tell which. So an
        upstream shard holding a record the uploads hide (a record named `ours` in the shard of
        `zzz`) is refused with a 404: the client stops, it never sees the impostor."""
        entry = self.packages.index.get_file(rp.key)
        if entry is None or not entry.local:  # merged shards of local names are ours
            subdir = rp.subdir or "noarch"
            shadow = self.hidden.shadow(channel)
            generation = self.uploads.generation(channel.name, subdir)
            verdict = (rp.key, f"{generation}+{fingerprint(shadow)}")
            if verdict not in self._clean_shards:
                local = self.local_records(channel, rp)
                await self._refuse_hiding_shard(rp, channel, shadow, local)
                self._clean_shards[verdict] = True
        return await self.packages.serve(rp, channel, asked)

    async def _refuse_hiding_shard(
        self,
        rp: ResourcePath,
        channel: ChannelSettings,
        shadow: set[str],
        local: Mapping[str, Record],
    ) -> None:
        data = await self.packages.bytes_of(rp, channel)
        try:
            records = await asyncio.to_thread(decode_shard, data)
        except (ValueError, TypeError, zstandard.ZstdError) as exc:
            raise UpstreamError(rp.key, f"unusable shard: {exc}"[:300]) from None
        hidden = sorted(fn for fn, r in records.items() if hides(fn, r.get("name"), shadow, local))
        if hidden:
            log.warning("shard with hidden records refused", path=rp.relative, files=hidden[:5])
            raise NotFound(
                f"upstream shard '{rp.relative}' holds records hidden in channel "
                f"'{channel.name}' by its uploads ({', '.join(hidden[:3])})"
            )

    def local_records(self, channel: ChannelSettings, rp: ResourcePath) -> dict[str, Record]:
        """The uploads of rp's subdir; none under a label (uploads live at the channel root)."""
        if rp.prefix:
            return {}
        uploads = self.uploads.current(channel.name, rp.subdir or "noarch")
        return {fn: u.record for fn, u in uploads.items()}

    async def repodata(
        self, rp: ResourcePath, channel: ChannelSettings
    ) -> tuple[Served, float | None]:
        """The merged snapshot, and the fetch time of the upstream copy it was made from (its
        freshness is the upstream's)."""
        subdir = rp.subdir or "noarch"
        local = self.local_records(channel, rp)
        upstream: Served | None = None
        upstream_path: Path | None = None
        if channel.upstream is not None:
            try:
                upstream = await self.views.repodata(rp, channel)
                key = MetaKey.repodata(rp.subdir_key)
                with_json = await self.views.with_json(key, upstream.entry)
                upstream = Served(with_json, upstream.outcome)
                upstream_path = self.views.meta.readable(key, with_json.variants["json"])
            except NotFound:
                if rp.prefix:
                    raise  # a label is the upstream's alone: none there, none here
                pass  # the upstream has no such subdir: the uploads are all there is
        if not local and upstream is None and subdir != "noarch":
            # noarch always exists (a 404 there is fatal for every client); others may not.
            raise NotFound(f"channel '{channel.name}' has no packages for {subdir}")
        shadow = self.hidden.shadow(channel)
        generation = self.uploads.generation(channel.name, subdir)
        source = f"{upstream.entry.digest if upstream else '-'}+{generation}+{fingerprint(shadow)}"
        merged = await self.merger.repodata(
            MetaKey.merged(rp.subdir_key),
            source,
            upstream_path,
            local,
            subdir,
            channel.allow_upstream,
            shadow,
        )
        outcome = upstream.outcome if upstream else "hit"
        return Served(merged, outcome), upstream.entry.fetched_at if upstream else None

    async def repodata_result(
        self, rp: ResourcePath, channel: ChannelSettings, asked: Asked
    ) -> Stored:
        served, fetched_at = await self.repodata(rp, channel)
        key = MetaKey.merged(rp.subdir_key)
        return await self.views.variant_result(key, served, rp.filename, asked, fetched_at)

    async def shard_index_result(self, rp: ResourcePath, channel: ChannelSettings) -> Stored:
        subdir = rp.subdir or "noarch"
        local = self.local_records(channel, rp)
        upstream_bytes, digest, outcome = None, "-", "hit"
        upstream_shards: dict[str, dict[str, Any]] = {}
        if channel.upstream is not None:
            # No upstream shards means clients must read repodata.json, which is merged too.
            served = await self.views.shard_index(rp, channel)
            digest, outcome = served.entry.digest, served.outcome
            key = MetaKey.shard_index(rp.subdir_key)
            path = self.views.meta.readable(key, served.entry.variants["body"])
            upstream_bytes = await asyncio.to_thread(path.read_bytes)
            upstream_shards = await self._allowed_upstream_shards(
                rp, channel, upstream_bytes, local
            )
        elif not local:
            raise NotFound(f"channel '{channel.name}' has no packages for {subdir}")
        shadow = self.hidden.shadow(channel)
        generation = self.uploads.generation(channel.name, subdir)
        source = f"{digest}+{generation}+{fingerprint(shadow)}"
        key = MetaKey.merged_shards(rp.subdir_key)
        merged = await self.merger.shard_index(
            key,
            source,
            f"{channel.name}/{subdir}",
            upstream_bytes,
            local,
            subdir,
            upstream_shards,
            shadow,
        )
        return self.views.result(key, Served(merged, outcome), "body", SHARD_TYPE)

    async def _allowed_upstream_shards(
        self,
        rp: ResourcePath,
        channel: ChannelSettings,
        upstream_index: bytes,
        local: Mapping[str, Record],
    ) -> dict[str, dict[str, Any]]:
        """Upstream records of local names listed in allow_upstream, read from their shards."""
        local_names = {str(r["name"]).lower() for r in local.values()}
        allowed = local_names & {n.lower() for n in channel.allow_upstream}
        if not allowed:
            return {}
        index = decode_msgpack(zstd_decompress(upstream_index, self.views.meta.max_document))
        shards = index.get("shards")
        found: dict[str, dict[str, Any]] = {}
        # Names compare lowercased (rules/shadowing.py): `Ours` upstream is `ours` allowed.
        wanted = sorted(
            (name, digest)
            for name, digest in (shards.items() if isinstance(shards, dict) else ())
            if isinstance(name, str) and name.lower() in allowed and isinstance(digest, bytes)
        )
        for name, digest in wanted:
            filename = f"{digest.hex()}.msgpack.zst"
            shard_rp = dataclasses.replace(rp, filename=filename, kind=Kind.SHARD)
            data = await self.packages.bytes_of(shard_rp, channel)
            try:
                found.setdefault(name.lower(), {}).update(decode_shard(data))
            except (ValueError, TypeError, zstandard.ZstdError) as exc:
                raise UpstreamError(shard_rp.key, f"unusable shard: {exc}"[:300]) from None
        return found
