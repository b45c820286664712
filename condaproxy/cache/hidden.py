"""Upstream files the uploads hide (rules/shadowing.py) are refused by URL too, not only left out
of the merged views: a client that asks for `zzz-9.0-0.conda` by direct URL (a lock file, an
explicit spec) must not get an impostor whose record says `"name": "ours"`.

The file name alone tells only part of it; the rest is in the upstream's record of the file, so
it is looked up as a miss looks it up (checksums.py: the repodata snapshot, or the shard of the
name the file name starts with) whether the file is cached or not. A conforming indexer files a
record in the shard of its `name` field, so the shards of the shadowed names are read too: a
file listed there is hidden whatever its file name says. Verdicts are kept per uploads
generation and upstream snapshot (the metadata digests), so a cache hit costs a lookup once.
When the upstream record cannot be read, the error stands (502): nothing is served unchecked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import structlog
import zstandard
from cachetools import LRUCache

from ..rules.errors import NotFound, UpstreamError
from ..rules.merge import Record
from ..rules.routing import Kind, ResourcePath
from ..rules.shadowing import hides, shadowed_names
from ..settings import ChannelSettings
from ..storage.keys import MetaKey
from ..storage.uploads import UploadStore
from .merging import decode_shard
from .packages import Packages

log = structlog.get_logger("condaproxy.cache.overlay")

# file key, uploads generation, shadowed names, repodata and shards digests
Verdict = tuple[str, int, str, str, str]


def fingerprint(shadow: set[str]) -> str:
    """A short stable name for a set of shadowed names, for cache and merge keys."""
    return hashlib.sha256("\n".join(sorted(shadow)).encode()).hexdigest()[:16]


class HiddenFiles:
    def __init__(self, uploads: UploadStore, packages: Packages) -> None:
        self.uploads = uploads
        self.packages = packages
        self._verdicts: LRUCache[Verdict, bool] = LRUCache(maxsize=65_536)
        # File names listed in the upstream shards of shadowed names, by shard index digest.
        self._shadow_files: LRUCache[tuple[str, frozenset[str]], frozenset[str]] = LRUCache(64)
        # The last answer of shadow() per channel, with the manifests it was made from.
        self._shadows: dict[str, tuple[tuple[Mapping[str, Any], ...], set[str]]] = {}

    def shadow(self, channel: ChannelSettings) -> set[str]:
        """The names the channel's uploads hide upstream, in every subdir: those uploaded in
        any subdir of it. A client reads its platform's subdir and noarch together and solves
        over both (an upload for linux-64 alone must hide an upstream noarch impostor, and the
        other way round), and a name belongs to its uploaders on every platform."""
        subdirs = self.uploads.subdirs(channel.name)
        manifests = tuple(self.uploads.current(channel.name, s) for s in subdirs)
        known = self._shadows.get(channel.name)
        # current() hands out the same dict while a manifest is unchanged: identity tells.
        if (
            known is not None
            and len(known[0]) == len(manifests)
            and all(a is b for a, b in zip(known[0], manifests, strict=True))
        ):
            return known[1]
        records = {f"{i}/{fn}": u.record for i, m in enumerate(manifests) for fn, u in m.items()}
        shadow = shadowed_names(records, channel.allow_upstream)
        self._shadows[channel.name] = (manifests, shadow)
        return shadow

    async def refuse(self, channel: ChannelSettings, rp: ResourcePath) -> None:
        """Raise NotFound (404) if the upstream file `rp` is hidden by the channel's uploads."""
        if channel.upstream is None or channel.mirror_only or rp.subdir is None:
            return
        if not self.uploads.subdirs(channel.name):
            return
        # Under a label there are no uploads (they live at the channel root), but the uploaded
        # names hide the upstream's files there too.
        uploads = {} if rp.prefix else self.uploads.current(channel.name, rp.subdir)
        local = {fn: u.record for fn, u in uploads.items()}
        shadow = self.shadow(channel)
        if hides(rp.filename, None, shadow, local):
            self._refused(channel, rp)
        if not shadow:
            return  # nothing but the uploads' own file names hides anything
        names = (self.uploads.generation(channel.name, rp.subdir), fingerprint(shadow))
        verdict = self._verdicts.get(self._verdict_key(rp, *names))
        if verdict is None:
            verdict = await self._hidden(channel, rp, shadow, local)
            self._verdicts[self._verdict_key(rp, *names)] = verdict
        if verdict:
            self._refused(channel, rp)

    def _verdict_key(self, rp: ResourcePath, generation: int, names: str) -> Verdict:
        index = self.packages.index
        repodata = index.get_meta(MetaKey.repodata(rp.subdir_key))
        shards = index.get_meta(MetaKey.shard_index(rp.subdir_key))
        return (
            rp.key,
            generation,
            names,
            repodata.digest if repodata else "-",
            shards.digest if shards else "-",
        )

    async def _hidden(
        self,
        channel: ChannelSettings,
        rp: ResourcePath,
        shadow: set[str],
        local: Mapping[str, Record],
    ) -> bool:
        record = await self.packages.checksums.record(rp)
        if record is not None and hides(rp.filename, record.get("name"), shadow, local):
            return True
        return rp.filename in await self._in_shadowed_shards(channel, rp, shadow)

    async def _in_shadowed_shards(
        self, channel: ChannelSettings, rp: ResourcePath, shadow: set[str]
    ) -> frozenset[str]:
        """The file names the upstream lists in the shards of shadowed names (any case)."""
        try:
            digest, names = await self.packages.checksums.shard_map(rp)
        except NotFound:
            return frozenset()  # no shards upstream: the repodata record was the whole story
        cache_key = (f"{rp.subdir_key}@{digest}", frozenset(shadow))
        found = self._shadow_files.get(cache_key)
        if found is not None:
            return found
        files: set[str] = set()
        for name, sha in sorted(names.items()):
            if not (isinstance(name, str) and name.lower() in shadow and isinstance(sha, bytes)):
                continue
            shard_rp = dataclasses.replace(rp, filename=f"{sha.hex()}.msgpack.zst", kind=Kind.SHARD)
            data = await self.packages.bytes_of(shard_rp, channel)
            try:
                files.update(await asyncio.to_thread(decode_shard, data))
            except (ValueError, TypeError, zstandard.ZstdError) as exc:
                raise UpstreamError(shard_rp.key, f"unusable shard: {exc}"[:300]) from None
        found = self._shadow_files[cache_key] = frozenset(files)
        return found

    def _refused(self, channel: ChannelSettings, rp: ResourcePath) -> None:
        log.warning("hidden upstream package refused", channel=channel.name, path=rp.relative)
        raise NotFound(
            f"'{rp.relative}' is hidden in channel '{channel.name}': its name, or the one its "
            "upstream record gives, is a package uploaded there (list the name in "
            "allow_upstream to show both)"
        )
