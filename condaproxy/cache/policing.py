"""The supply-chain policy on every path a client reads (issue 13).

For a channel the policy touches, every repodata variant (json, zst, bz2, gzip, current_) comes
from one filtered snapshot per subdir, the CEP-16 index and shards are made from that same
snapshot, and a package download is checked against it before anything is fetched. For other
channels none of this runs (dispatch.py asks `active` first and nothing else).

A filtered snapshot is named by its source (the upstream or merged snapshot's digest, which
moves with the uploads generation) and the policy's digest, and is valid until the earliest
release of a record it holds, rounded up to the revalidation interval: then it is rebuilt, once
(single flight across workers), with new ETags, in the worker process for big documents. A view
that cannot be built is a 503, never the unfiltered document.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import structlog

from ..rules.errors import NotFound, ProxyError
from ..rules.policy import COOLDOWN, DENY, VIEW, Policy, PolicyRefused, Verdict
from ..rules.routing import PACKAGE_RE, Kind, ResourcePath, parse_path
from ..settings import ChannelSettings
from ..storage.index import FileEntry, MetaEntry
from ..storage.keys import MetaKey, MetaKind
from ..storage.publish_times import times_path
from .fail_closed import built_or_503
from .instruments import Metrics
from .metadata import Served
from .overlay import Overlay
from .policy_builds import filter_job, shards_job
from .results import Asked, Result, Stored
from .views import SHARD_TYPE
from .workers import BIG

log = structlog.get_logger("condaproxy.cache.policing")
audit = structlog.get_logger("condaproxy.audit")

SHARD_PREFIX = "policy:"  # index keys of the shards the policy's views name


@dataclasses.dataclass(frozen=True)
class Lists:
    held: dict[str, tuple[str, str, float | None]]
    served: frozenset[str]


class Policing:
    def __init__(
        self,
        policy: Policy,
        channels: dict[str, ChannelSettings],
        overlay: Overlay,
        metrics: Metrics,
        root: Path,
        clock: Callable[[], float] = time.time,
        test_clock_file: str = "",
    ) -> None:
        self.policy = policy
        self.overlay = overlay
        self.views = overlay.views
        self.meta = self.views.meta
        self.index = self.meta.index
        self.metrics = metrics
        self.root = root
        self.clock = clock
        self.test_clock_file = test_clock_file
        if test_clock_file:  # a test hook: in production it would move every hold's end
            log.warning("policy clock moved by policy.test_clock_file", file=test_clock_file)
        self.bucket = max(float(self.meta.ttl), 1.0)
        self.channels = frozenset(n for n in channels if policy.active(n))
        self._digests = {n: policy.digest(n) for n in self.channels}
        self.all_channels = channels
        self._lists: OrderedDict[str, Lists] = OrderedDict()
        self._memo: dict[str, tuple[str, float, MetaEntry, str]] = {}  # subdir key -> last view

    def active(self, channel: str) -> bool:
        return channel in self.channels

    def now(self) -> float:
        if not self.test_clock_file:
            return self.clock()
        try:  # TEST ONLY (settings.PolicySettings.test_clock_file)
            return self.clock() + float(Path(self.test_clock_file).read_text() or 0)
        except (OSError, ValueError):
            return self.clock()

    # what clients read

    async def serve(
        self,
        rp: ResourcePath,
        channel: ChannelSettings,
        asked: Asked,
        otherwise: Callable[[], Awaitable[Result]],
    ) -> Result:
        if rp.kind is Kind.REPODATA:
            served, fetched_at = await self.view(rp, channel)
            key = MetaKey.policy(rp.subdir_key)
            return await self.views.variant_result(key, served, rp.filename, asked, fetched_at)
        if rp.kind is Kind.SHARD_INDEX:
            return await self.shard_index_result(rp, channel)
        if rp.kind is Kind.SHARD:
            return await self.shard_hit(rp)
        if rp.kind is Kind.PACKAGE:
            await self.check_package(rp, channel)
        return await otherwise()

    async def view(self, rp: ResourcePath, channel: ChannelSettings) -> tuple[Served, float | None]:
        """The filtered snapshot of rp's subdir (rebuilt when due), and the fetch time of the
        snapshot it came from."""
        repodata_rp = dataclasses.replace(rp, filename="repodata.json", kind=Kind.REPODATA)
        local: list[str] = []
        fetched_at = None
        if self.overlay.covers(channel, repodata_rp):
            source, fetched_at = await self.overlay.repodata(repodata_rp, channel)
            source_key = MetaKey.merged(rp.subdir_key)
            local = sorted(self.overlay.local_records(channel, repodata_rp))
        elif channel.upstream is None:
            raise NotFound(f"'{rp.relative}' is not in local channel '{channel.name}'")
        else:
            source = await self.views.repodata(repodata_rp, channel)
            source_key = MetaKey.repodata(rp.subdir_key)
            fetched_at = source.entry.fetched_at  # the view is as fresh as its source
        origin = f"{source_key}|{source.entry.digest}|{self._digests[channel.name]}"
        key = MetaKey.policy(rp.subdir_key)
        entry = await self.meta.intact(key, self._valid(key, origin))
        if entry is not None:
            return Served(entry, source.outcome), fetched_at
        async with self.meta.locks.hold(key.lock):
            entry = await self.meta.intact(key, self._valid(key, origin))
            if entry is None:
                entry = await built_or_503(
                    "policy view",
                    key,
                    lambda: self._build(key, origin, source, source_key, rp, channel, local),
                )
        return Served(entry, source.outcome), fetched_at

    def _valid(self, key: MetaKey, origin: str) -> MetaEntry | None:
        """The stored view if it is still the one to serve. The last one seen is kept in
        memory (a hit then costs no index read): a view is immutable for its origin until
        its release time, and any newer one has another origin or comes after that time."""
        now = self.now()
        remembered = self._memo.get(key.path)
        if remembered is not None and remembered[0] == origin and now < remembered[1]:
            if os.path.exists(remembered[3]):  # a purge drops views: a stat, not an index read
                return remembered[2]
            del self._memo[key.path]
        entry = self.index.get_meta(key)
        if entry is None:
            return None
        made_from, _, until = entry.source_url.rpartition("|")
        if made_from != origin or now >= float(until):
            return None
        json_file = str(self.meta.variant_path(key, entry.variants["json"]))
        self._memo[key.path] = (origin, float(until), entry, json_file)
        return entry

    async def _build(
        self,
        key: MetaKey,
        origin: str,
        source: Served,
        source_key: MetaKey,
        rp: ResourcePath,
        channel: ChannelSettings,
        local: list[str],
    ) -> MetaEntry:
        with_json = await self.views.with_json(source_key, source.entry)  # made from its .zst
        variant = with_json.variants["json"]
        path = self.meta.readable(source_key, variant)
        # First seen per channel and subdir, whatever the label: a file that appears under a
        # fresh label is not backfilled from its (backdatable) build time.
        times = f"{channel.name}/{rp.subdir or 'noarch'}"
        async with self.meta.locks.hold(f"policy-times:{times}"):
            now = self.now()
            built, next_release = await self.meta.workers.run(
                variant.size > BIG,
                filter_job,
                str(path),
                times_path(self.root, times),
                self.policy.config,
                channel.name,
                rp.subdir or "noarch",
                now,
                local,
                str(self.meta.tmp_dir),
                origin,
            )
        until = math.inf
        if next_release is not None:
            until = math.ceil(next_release / self.bucket) * self.bucket
        entry = await asyncio.to_thread(self.meta.put_derived, key, f"{origin}|{until}", built)
        lists = await self.lists(key, entry)
        for kind in ("deny", "allow", "cooldown"):
            count = sum(1 for v in lists.held.values() if v[0] == kind)
            self.metrics.policy_held.labels(channel.name, kind).set(count)
        log.info("policy view built", key=str(key), held=len(lists.held), served=len(lists.served))
        return entry

    async def lists(self, key: MetaKey, entry: MetaEntry) -> Lists:
        """The held records and served file names of a view (a few kept in memory)."""
        found = self._lists.get(entry.digest)
        if found is None:

            def read() -> Lists:
                held = msgpack.unpackb(self.meta.readable(key, entry.variants["held"]).read_bytes())
                served = msgpack.unpackb(
                    self.meta.readable(key, entry.variants["served"]).read_bytes()
                )
                return Lists({k: tuple(v) for k, v in held.items()}, frozenset(served))

            found = self._lists[entry.digest] = await asyncio.to_thread(read)
            while len(self._lists) > 4:
                self._lists.popitem(last=False)
        return found

    # sharded repodata

    async def shard_index_result(self, rp: ResourcePath, channel: ChannelSettings) -> Stored:
        if channel.upstream is not None:
            await self.views.shard_index(rp, channel)  # no upstream shards: 404, as without policy
        served, _ = await self.view(rp, channel)
        key = MetaKey.policy_shards(rp.subdir_key)
        entry = await self.meta.intact(key, self.index.get_meta(key))
        if entry is None or entry.source_url != served.entry.digest:
            async with self.meta.locks.hold(key.lock):
                entry = await self.meta.intact(key, self.index.get_meta(key))
                if entry is None or entry.source_url != served.entry.digest:
                    view = served.entry
                    entry = await built_or_503(
                        "policy view", key, lambda: self._shards(key, view, rp)
                    )
        return self.views.result(key, Served(entry, served.outcome), "body", SHARD_TYPE)

    async def _shards(self, key: MetaKey, view: MetaEntry, rp: ResourcePath) -> MetaEntry:
        variant = view.variants["json"]
        before = self.index.get_meta(key)
        names = before.variants.get("names") if before is not None else None
        built, stored = await self.meta.workers.run(
            variant.size > BIG,
            shards_job,
            str(self.meta.readable(MetaKey.policy(rp.subdir_key), variant)),
            rp.subdir or "noarch",
            str(self.overlay.packages.store.root),
            str(self.meta.tmp_dir),
            str(self.meta.variant_path(key, names)) if names is not None else None,
        )

        def adopt() -> MetaEntry:
            now = self.clock()
            with self.index.transact():
                for sha, size in stored:
                    shard_key = self._shard_key(rp, f"{sha}.msgpack.zst")
                    if self.index.get_file(shard_key) is None:
                        self.index.put_file(shard_key, FileEntry(sha, size, now, local=True))
            return self.meta.put_derived(key, view.digest, built)

        return await asyncio.to_thread(adopt)

    @staticmethod
    def _shard_key(rp: ResourcePath, filename: str) -> str:
        shard_rp = dataclasses.replace(rp, filename=filename, kind=Kind.SHARD)
        return SHARD_PREFIX + shard_rp.key

    async def shard_hit(self, rp: ResourcePath) -> Stored:
        """Only shards a policy view named: an upstream shard may hold what the view hides."""
        entry = self.index.get_file(SHARD_PREFIX + rp.key)
        hit = await self.overlay.packages.hit(entry) if entry is not None else None
        if hit is None:
            verdict = Verdict(VIEW, "only shards named by the policy's shard index are served")
            self._refused(rp, verdict)
            raise PolicyRefused(rp.filename, verdict)
        return hit

    # downloads

    async def check_package(self, rp: ResourcePath, channel: ChannelSettings) -> None:
        """Raise PolicyRefused (403) for a file the policy hides; nothing is fetched."""
        verdict = await self.verdict(rp, channel)
        if verdict is not None:
            self._refused(rp, verdict)
            raise PolicyRefused(rp.filename, verdict)

    async def verdict(self, rp: ResourcePath, channel: ChannelSettings) -> Verdict | None:
        try:
            served, _ = await self.view(rp, channel)
        except NotFound:
            lists = Lists({}, frozenset())
        else:
            lists = await self.lists(MetaKey.policy(rp.subdir_key), served.entry)
        held = lists.held.get(rp.filename)
        if held is not None:
            return Verdict(*held)
        if rp.filename in lists.served:
            return None
        # Not listed (yet): a file uploaded upstream a minute ago must not slip through by URL.
        # Judged by what its name says (and its sha256, if cached), as published now.
        match = PACKAGE_RE.match(rp.filename)
        if match is None:
            return None
        cached = self.index.get_file(rp.key)
        record = {
            "name": match["name"],
            "version": match["version"],
            "build": match["build"],
            "subdir": rp.subdir,
            "fn": rp.filename,
            "sha256": cached.sha256 if cached is not None else None,
        }
        now = self.now()
        verdict = self.policy.decide(channel.name, record, now, now)
        if verdict is None:
            unknown = {"sha256", "md5"} if cached is None else {"md5"}
            for spec in self.policy.deny:
                if spec.checksums & unknown and spec.may_match(record):
                    # A delisted file a deny rule names by checksum must not pass unchecked.
                    return Verdict(DENY, f"{spec.text} (an unlisted file's checksum is unknown)")
        return verdict

    def _refused(self, rp: ResourcePath, verdict: Verdict) -> None:
        self.metrics.policy_refused.labels(rp.channel, verdict.kind).inc()
        audit.warning(
            "audit",
            action="policy-refused",
            target=rp.key,
            rule=verdict.kind,
            spec=verdict.rule,
            **(
                {"released_at": verdict.public()["released_at"]} if verdict.kind == COOLDOWN else {}
            ),
        )

    # for the admin API

    async def held(self, channel: ChannelSettings) -> list[dict[str, object]]:
        """Every record the channel's views hold back (each view brought up to date first)."""
        out: list[dict[str, object]] = []
        keys = await asyncio.to_thread(self.index.iter_meta)
        for meta_key, _ in sorted(keys, key=lambda k: k[0].path):
            if meta_key.kind is not MetaKind.POLICY:
                continue
            try:
                rp = parse_path(f"/{meta_key.path}/repodata.json", self.all_channels)
            except ProxyError:
                continue
            if rp.channel != channel.name:
                continue
            subdir = rp.subdir or "noarch"
            try:
                served, _ = await self.view(rp, channel)
            except NotFound:
                continue
            lists = await self.lists(MetaKey.policy(rp.subdir_key), served.entry)
            for filename, (kind, rule, release) in sorted(lists.held.items()):
                match = PACKAGE_RE.match(filename)
                item: dict[str, object] = {
                    "subdir": subdir,
                    "label": rp.prefix or None,
                    "filename": filename,
                    "name": match["name"] if match else None,
                    "version": match["version"] if match else None,
                    **Verdict(kind, rule, release).public(),
                }
                out.append(item)
        return out
