"""What operators do to the cache, on the services themselves: purge scopes, usage counts, and a
channel whose upstream changed between two starts over the same cache directory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from condaproxy.cache.instruments import Metrics
from condaproxy.ops.admin import Scope, stats_for
from condaproxy.rules.errors import NotFound
from condaproxy.rules.routing import parse_path
from condaproxy.settings import ChannelSettings, Settings
from condaproxy.web.services import Services, build_services
from tests.support.inproc import Clock, make_settings, record, repodata, streamed

OLD, NEW = "https://old.example/ch", "https://new.example/ch"
PKG = b"package bytes" * 50


def transport(*bases: str) -> httpx.MockTransport:
    """Upstreams at `bases`, each listing pkg-1.0-0.conda in linux-64 (no shards); every other
    path is a 404."""

    def answer(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        for base in bases:
            if url == f"{base}/linux-64/repodata.json":
                doc = repodata("linux-64", {"pkg-1.0-0.conda": record("pkg-1.0-0.conda", PKG)})
                return streamed(doc)
            if url == f"{base}/linux-64/pkg-1.0-0.conda":
                return streamed(PKG)
        return httpx.Response(404)

    return httpx.MockTransport(answer)


@contextlib.asynccontextmanager
async def services(settings: Settings, *bases: str) -> AsyncIterator[Services]:
    built = await build_services(
        settings, metrics=Metrics(), clock=Clock(), transport=transport(*bases)
    )
    try:
        yield built
    finally:
        await built.aclose()


def settings(tmp_path: Path, *channels: ChannelSettings) -> Settings:
    return make_settings(tmp_path / "cache", channels)


async def test_a_changed_upstream_drops_what_came_from_the_old_one(tmp_path):
    async with services(settings(tmp_path, ChannelSettings("ch", OLD)), OLD) as first:
        assert await first.proxy.warm("ch", "linux-64", "pkg-1.0-0.conda") == "miss"
        with pytest.raises(NotFound):
            await first.proxy.warm("ch", "linux-64", "gone-1.0-0.conda")
        await first.downloads.aclose()
        assert first.admin.usage()["ch"]["files"] == 1
        assert first.index.iter_missing() != []

    again = settings(tmp_path, ChannelSettings("ch", OLD))
    with capture_logs() as unchanged:
        async with services(again, OLD) as second:
            assert await second.proxy.warm("ch", "linux-64", "pkg-1.0-0.conda") == "hit"
    assert not [e for e in unchanged if "upstream changed" in e["event"]]

    moved = settings(tmp_path, ChannelSettings("ch", NEW), ChannelSettings("added", NEW))
    with capture_logs() as events:
        async with services(moved, NEW) as third:
            assert third.admin.usage() == {}
            assert third.index.iter_missing() == []
            assert await third.proxy.warm("ch", "linux-64", "pkg-1.0-0.conda") == "miss"
    changed = [e for e in events if "upstream changed" in e["event"]]
    assert [(e["channel"], e["old_upstream"], e["upstream"]) for e in changed] == [("ch", OLD, NEW)]
    assert changed[0]["log_level"] == "warning"


async def test_files_of_a_channel_no_longer_configured_are_counted_and_purged_only_by_all(
    tmp_path,
):
    both = settings(tmp_path, ChannelSettings("ch", OLD), ChannelSettings("old", OLD))
    async with services(both, OLD) as first:
        await first.proxy.warm("old", "linux-64", "pkg-1.0-0.conda")
        await first.downloads.aclose()
    async with services(settings(tmp_path, ChannelSettings("ch", OLD)), OLD) as second:
        assert second.admin.usage() == {"(unconfigured)": {"files": 1, "bytes": len(PKG)}}
        assert second.admin.purge(Scope(channel="ch"))["files"] == 0
        assert second.admin.purge(Scope())["files"] == 1
        assert second.admin.usage() == {}


def rp(path: str):
    return parse_path(path, ["ch", "ch/sub"])


@pytest.mark.parametrize(
    ("scope", "path", "covered"),
    [
        (Scope(), "ch/linux-64/a-1-0.conda", True),
        (Scope(channel="ch"), "ch/linux-64/a-1-0.conda", True),
        (Scope(channel="ch"), "ch/sub/linux-64/a-1-0.conda", False),
        (Scope(channel="ch", subdir="noarch"), "ch/linux-64/a-1-0.conda", False),
        (Scope(channel="ch", filename="a-1-0.conda"), "ch/linux-64/a-1-0.conda", True),
        (Scope(channel="ch", filename="b-1-0.conda"), "ch/linux-64/a-1-0.conda", False),
        (Scope(package="a"), "ch/linux-64/a-1-0.conda", True),
        (Scope(package="a"), "ch/linux-64/ab-1-0.conda", False),
        (Scope(package="a"), "ch/linux-64/repodata.json", False),
        (Scope(package="a"), f"ch/linux-64/shards/{'0' * 64}.msgpack.zst", False),
    ],
)
def test_a_scope_covers_exactly_what_it_names(scope, path, covered):
    assert scope.covers(rp(path)) is covered


def test_stats_join_usage_and_counters_for_every_channel():
    usage = {"ch": {"files": 2, "bytes": 10}, "(unconfigured)": {"files": 1, "bytes": 3}}
    counters = {"ch": {"hit": 5.0, "miss": 2.0, "upstream_errors": 1.0, "stale": 1.0}}
    out = stats_for(usage, counters, {"ch": None, "empty": None})
    assert out["ch"] == {
        "files": 2, "bytes": 10, "hits": 5, "misses": 2, "revalidated": 0, "coalesced": 0,
        "stale_serves": 1, "upstream_errors": 1,
    }  # fmt: skip
    assert out["empty"]["files"] == 0 and out["(unconfigured)"]["files"] == 1
