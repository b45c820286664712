"""What operators do to the cache: purge by scope, count what it holds. Uploads are never
touched (they live in their own store), nor are shards derived from them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..cache.metadata import MetadataCache
from ..rules.redact import upstream_identity
from ..rules.routing import PACKAGE_RE, Kind, ResourcePath, channel_prefix, parse_path
from ..settings import ChannelSettings
from ..storage.blobs import BlobStore
from ..storage.index import Index
from ..storage.keys import MetaKey


@dataclass(frozen=True)
class Scope:
    """What to purge: everything, or one channel, subdir, file or package name."""

    channel: str | None = None
    subdir: str | None = None
    filename: str | None = None
    package: str | None = None
    metadata_only: bool = False

    def covers(self, rp: ResourcePath) -> bool:
        if self.channel is not None and rp.channel != self.channel:
            return False
        if self.subdir is not None and rp.subdir != self.subdir:
            return False
        if self.filename is not None and rp.filename != self.filename:
            return False
        if self.package is not None:
            match = PACKAGE_RE.match(rp.filename)
            # Package names compare as conda compares them: ignoring case (`NumPy` is numpy).
            name = match["name"].lower() if match is not None else None
            return rp.kind is Kind.PACKAGE and name == self.package.lower()
        return True


class CacheAdmin:
    def __init__(
        self,
        channels: Mapping[str, ChannelSettings],
        index: Index,
        store: BlobStore,
        meta: MetadataCache,
    ) -> None:
        self.channels = channels
        self.index = index
        self.store = store
        self.meta = meta

    def _parse(self, key: str) -> ResourcePath | None:
        try:
            return parse_path(key, self.channels)
        except Exception:  # keys of channels no longer configured
            return None

    def purge(self, scope: Scope, forgotten: list[str] | None = None) -> dict[str, int]:
        """Drop what `scope` covers; the sha256 of each file blob dropped is added to
        `forgotten` (the shared bucket's copies go too, with [storage])."""
        files = size = metadata = 0
        if not scope.metadata_only:
            self.index.count_purge()  # first: commits waiting from before it are dropped
            dropped: dict[str, None] = {}  # blobs of the entries dropped, in order
            named: set[str] = set()  # blobs entries outside the scope still name
            for key, entry in self.index.iter_files():
                rp = self._parse(key)
                if (
                    entry.local
                    or (rp is not None and not scope.covers(rp))
                    or (rp is None and scope.channel is not None)
                ):
                    named.add(entry.sha256)
                    continue
                self.index.forget_file(key)
                dropped[entry.sha256] = None
                files += 1
            # The store is content-addressed: another channel over the same upstream (a team
            # channel over conda-forge) names the same blob, and keeps it.
            for sha256 in dropped:
                if sha256 in named:
                    continue
                size += self.store.delete(sha256)
                if forgotten is not None:
                    forgotten.append(sha256)
        if scope.filename is None and scope.package is None:
            for meta_key, meta_entry in self.index.iter_meta():
                if not self._meta_in_scope(meta_key, scope):
                    continue
                store = self.meta.store_for(meta_key)
                for variant in meta_entry.variants.values():
                    size += store.delete(variant.sha256)
                self.index.forget_meta(meta_key)
                metadata += 1
        self._forget_missing(scope)
        return {"files": files, "metadata": metadata, "bytes": size}

    def _forget_missing(self, scope: Scope) -> None:
        """The upstream 404s remembered (for `negative_ttl`) of what `scope` covers go with it:
        a purge after an upstream's mistaken 404 (a CDN that lost a file for a while, a subdir
        published late) makes the next request ask the upstream again, as for everything else
        it purged, instead of repeating the 404 until it expires."""
        for key in self.index.iter_missing():
            meta_key = MetaKey.parse(key)
            if meta_key is None:  # a file's key: `<channel>/<subdir>/<file>`
                rp = self._parse(key)
                if scope.metadata_only or (rp is None and scope.channel is not None):
                    continue
                if rp is not None and not scope.covers(rp):
                    continue
            else:
                if scope.filename is not None or scope.package is not None:
                    continue
                if not self._meta_in_scope(meta_key, scope):
                    continue
            self.index.forget_missing(key)

    def _meta_in_scope(self, meta_key: MetaKey, scope: Scope) -> bool:
        channel = channel_prefix(meta_key.path, self.channels)
        if scope.channel is not None and channel != scope.channel:
            return False
        return scope.subdir is None or scope.subdir in meta_key.path.split("/")

    def forget_changed_upstreams(self) -> dict[str, str]:
        """A channel whose `upstream` changed since the cache was filled starts afresh: what
        was fetched from the old upstream (metadata, files, remembered 404s) is dropped, so the
        new upstream answers at once and the old one is never revalidated or served stale.
        Uploads stay. Returns {channel: old upstream} for what was dropped.

        The record keeps each upstream with its credentials masked (rules/redact.py): none on
        disk, and a rotated password or token is the same upstream (its cache stays)."""
        known: dict[str, str | None] = self.index.get_value(("upstreams",), {})
        changed = {}
        for name, channel in self.channels.items():
            old = known.get(name)
            if name in known and upstream_identity(old) != upstream_identity(channel.upstream):
                self.purge(Scope(channel=name))  # its remembered 404s too
                changed[name] = old or "(none)"
        current = {n: upstream_identity(ch.upstream) for n, ch in self.channels.items()}
        if current != known:
            self.index.set_value(("upstreams",), {**known, **current})
        return changed

    def usage(self) -> dict[str, dict[str, int]]:
        """Cached files and bytes per channel."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "bytes": 0})
        for key, entry in self.index.iter_files():
            rp = self._parse(key)
            channel = rp.channel if rp is not None else "(unconfigured)"
            counts[channel]["files"] += 1
            counts[channel]["bytes"] += entry.size
        return dict(counts)


def stats_for(
    usage: dict[str, dict[str, int]],
    counters: dict[str, dict[str, float]],
    channels: Mapping[str, Any],
) -> dict[str, Any]:
    out = {}
    for name in sorted(set(channels) | set(usage)):
        c = counters.get(name, {})
        out[name] = {
            **usage.get(name, {"files": 0, "bytes": 0}),
            "hits": int(c.get("hit", 0)),
            "misses": int(c.get("miss", 0)),
            "revalidated": int(c.get("revalidated", 0)),
            "coalesced": int(c.get("coalesced", 0)),
            "stale_serves": int(c.get("stale", 0)),
            "upstream_errors": int(c.get("upstream_errors", 0)),
        }
    return out
