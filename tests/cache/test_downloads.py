"""Verified, shared downloads in-process, on the engine the app uses (`proxy.serve`): clients
of one miss share one upstream download, the last byte waits for verification, one client's
X-Expected-Sha256 decides only its own answer, a full or low disk still serves every client
whole, and a second worker (a second set of services over the same cache directory) follows the
first one's download, or streams on its own when there is nothing to follow.

The upstream hands out package bodies in 1 MiB pieces, and past `cut` bytes waits for the
test to `release` it, so every interleaving below is decided by the test, not by timing."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from condaproxy.cache.instruments import Metrics
from condaproxy.cache.results import Asked, Stored, Streamed
from condaproxy.cache.transfer import ClientAbort
from condaproxy.rules.routing import parse_path
from condaproxy.settings import ChannelSettings, ServerSettings
from condaproxy.storage.blobs import TempBlob
from condaproxy.web.services import Services, build_services
from tests.support.inproc import Clock, make_settings, record, repodata, streamed

UP = "https://up.example/cf"
# The proxy reads upstream bodies in 1 MiB chunks (httpx buffers up to that), so pieces of
# that size are what a client can observe arriving one by one.
PIECE = 1 << 20
SIZE = 4 * PIECE
FILES = {
    f"{n}-1.0-0.conda": bytes([65 + i]) * SIZE for i, n in enumerate(("pkg", "md5only", "lock"))
}
SHA = {fn: hashlib.sha256(data).hexdigest() for fn, data in FILES.items()}
WRONG = "0" * 64


class Upstream:
    """Channel `cf`: pkg is listed with its sha256, md5only with its md5 alone, lock not at all
    (a lockfile URL)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cut = 2 * PIECE
        self.calls: collections.Counter[str] = collections.Counter()
        self.broken: set[str] = set()  # the next body of these breaks off at the cut

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.answer)

    async def answer(self, request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[1]
        self.calls[name] += 1
        if name == "repodata.json":
            listed = {
                "pkg-1.0-0.conda": record("pkg-1.0-0.conda", FILES["pkg-1.0-0.conda"]),
                "md5only-1.0-0.conda": {
                    k: v
                    for k, v in record("md5only-1.0-0.conda", FILES["md5only-1.0-0.conda"]).items()
                    if k != "sha256"
                },
            }
            return streamed(repodata("linux-64", listed))
        if name not in FILES:
            return httpx.Response(404)
        broken = name in self.broken
        self.broken.discard(name)
        headers = {"content-length": str(SIZE)}
        return httpx.Response(200, headers=headers, stream=Pieces(self, FILES[name], broken))


class Pieces(httpx.AsyncByteStream):
    def __init__(self, upstream: Upstream, data: bytes, broken: bool) -> None:
        self.upstream, self.data, self.broken = upstream, data, broken

    async def __aiter__(self) -> AsyncIterator[bytes]:
        cut = self.upstream.cut
        for i in range(0, cut, PIECE):
            yield self.data[i : min(i + PIECE, cut)]
        await self.upstream.release.wait()
        if self.broken:
            raise httpx.ReadError("connection reset by peer")
        for i in range(cut, len(self.data), PIECE):
            yield self.data[i : i + PIECE]


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@contextlib.asynccontextmanager
async def worker(tmp_path: Path, upstream: Upstream, **cache: Any) -> AsyncIterator[Services]:
    """One worker's services over the cache directory at tmp_path/cache, in a deployment of
    two workers (cross-process locks and in-flight notes on)."""
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], **cache)
    settings = msgspec.structs.replace(settings, server=ServerSettings(workers=2))
    services = await build_services(
        settings, metrics=Metrics(), clock=Clock(), transport=upstream.transport()
    )
    try:
        yield services
    finally:
        upstream.release.set()
        await asyncio.wait_for(services.aclose(), 10)


async def ask(services: Services, filename: str, claim: str | None = None) -> Any:
    rp = parse_path(f"cf/linux-64/{filename}", services.settings.channels)
    headers = {"x-expected-sha256": claim} if claim else {}
    return await asyncio.wait_for(services.proxy.serve(rp, Asked(headers)), 10)


async def body_of(result: Streamed, start: int = 0, end: int | None = SIZE) -> bytes:
    """What a client receives (StreamResponse reads the body the same way)."""
    assert result.body is not None
    try:
        return b"".join([c async for c in result.body.chunks(start, end)])
    finally:
        await result.body.aclose()


def receive(result: Streamed, start: int = 0, end: int | None = SIZE) -> asyncio.Task[bytes]:
    return asyncio.create_task(asyncio.wait_for(body_of(result, start, end), 10))


async def test_clients_of_one_miss_share_one_download_and_no_one_gets_the_last_byte_early(
    tmp_path, upstream
):
    async with worker(tmp_path, upstream) as services:
        first = await ask(services, "pkg-1.0-0.conda")
        second = await ask(services, "pkg-1.0-0.conda", claim=SHA["pkg-1.0-0.conda"])
        assert (first.outcome, second.outcome) == ("miss", "coalesced")
        assert first.head.size == SIZE and first.head.sha256 == SHA["pkg-1.0-0.conda"]
        ranged = await ask(services, "pkg-1.0-0.conda")

        early = first.body.chunks(0, SIZE)
        got = await asyncio.wait_for(anext(early), 10)
        assert FILES["pkg-1.0-0.conda"].startswith(got) and 0 < len(got) < upstream.cut
        pending = asyncio.create_task(asyncio.wait_for(anext(early), 10))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not pending.done() or len(got + pending.result()) < upstream.cut, (
            "before the rest is sent and verified, the last byte stays back"
        )

        part = receive(ranged, 100, 200)
        other = receive(second)
        upstream.release.set()
        rest = await pending + b"".join([c async for c in early])
        await first.body.aclose()
        assert got + rest == FILES["pkg-1.0-0.conda"]
        assert await other == FILES["pkg-1.0-0.conda"]
        assert await part == FILES["pkg-1.0-0.conda"][100:200]
        assert upstream.calls["pkg-1.0-0.conda"] == 1

        await services.downloads.aclose()
        hit = await ask(services, "pkg-1.0-0.conda")
        assert isinstance(hit, Stored) and hit.outcome == "hit"
        os.close(hit.fd)


async def test_a_wrong_expected_sha256_aborts_only_that_client(tmp_path, upstream):
    """The record has an md5 only, so the claim can only be checked once the bytes are in."""
    async with worker(tmp_path, upstream) as services:
        honest = await ask(services, "md5only-1.0-0.conda")
        mistaken = await ask(services, "md5only-1.0-0.conda", claim=WRONG)
        upstream.release.set()
        assert await receive(honest) == FILES["md5only-1.0-0.conda"]
        with pytest.raises(ClientAbort, match="differs from the X-Expected-Sha256"):
            await receive(mistaken)
        await services.downloads.aclose()
        assert isinstance(await ask(services, "md5only-1.0-0.conda"), Stored), "kept: md5 matched"


async def test_a_file_no_record_lists_is_checked_per_client_and_never_kept(tmp_path, upstream):
    async with worker(tmp_path, upstream) as services:
        right = await ask(services, "lock-1.0-0.conda", claim=SHA["lock-1.0-0.conda"])
        wrong = await ask(services, "lock-1.0-0.conda", claim=WRONG)
        assert (right.outcome, wrong.outcome) == ("miss", "coalesced")
        assert right.body.ranges is False, "bytes not on disk: a range gets the whole file"
        upstream.release.set()
        assert await receive(right) == FILES["lock-1.0-0.conda"]
        with pytest.raises(ClientAbort, match="X-Expected-Sha256"):
            await receive(wrong)
        await services.downloads.aclose()
        again = await ask(services, "lock-1.0-0.conda")
        assert isinstance(again, Streamed) and again.outcome == "miss"
        await again.body.aclose()


async def test_a_broken_upstream_body_aborts_every_client_and_keeps_nothing(tmp_path, upstream):
    upstream.broken.add("pkg-1.0-0.conda")
    async with worker(tmp_path, upstream) as services:
        clients = [await ask(services, "pkg-1.0-0.conda") for _ in range(2)]
        upstream.release.set()
        for client in clients:
            with pytest.raises(ClientAbort, match="body broken off"):
                await receive(client)
        await services.downloads.aclose()
        assert list((tmp_path / "cache" / "tmp").iterdir()) == [], "no temp file left"
        retry = await ask(services, "pkg-1.0-0.conda")
        assert retry.outcome == "miss"
        assert await receive(retry) == FILES["pkg-1.0-0.conda"]
        assert upstream.calls["pkg-1.0-0.conda"] == 2


async def test_a_disk_that_fills_mid_download_still_serves_every_client_whole(
    tmp_path, upstream, monkeypatch
):
    write = TempBlob.write

    def fill_up(self: TempBlob, data: bytes) -> None:
        if os_size(self) >= upstream.cut:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, data)

    monkeypatch.setattr(TempBlob, "write", fill_up)
    async with worker(tmp_path, upstream) as services:
        clients = [await ask(services, "pkg-1.0-0.conda") for _ in range(2)]
        upstream.release.set()
        for client in clients:
            assert await receive(client) == FILES["pkg-1.0-0.conda"]
        await services.downloads.aclose()
        assert services.metrics.not_cached.labels("disk_full")._value.get() == 1
        again = await ask(services, "pkg-1.0-0.conda")
        assert isinstance(again, Streamed), "nothing was kept"
        await again.body.aclose()


def os_size(temp: TempBlob) -> int:
    return os.fstat(temp.fd).st_size


async def test_below_min_free_clients_share_the_download_through_memory(tmp_path, upstream):
    async with worker(tmp_path, upstream, min_free=2**62) as services:
        first = await ask(services, "pkg-1.0-0.conda")
        second = await ask(services, "pkg-1.0-0.conda")
        assert second.outcome == "coalesced"
        upstream.release.set()
        assert await receive(first) == await receive(second) == FILES["pkg-1.0-0.conda"]
        assert upstream.calls["pkg-1.0-0.conda"] == 1
        assert services.metrics.not_cached.labels("low_disk")._value.get() == 1


async def test_a_client_too_late_for_the_memory_window_streams_on_its_own(tmp_path, upstream):
    async with worker(tmp_path, upstream, min_free=2**62) as services:
        early = await ask(services, "pkg-1.0-0.conda")
        chunks = early.body.chunks(0, SIZE)
        got = b""
        while len(got) < upstream.cut - 1:  # the early client is past the first piece (the
            # window holds every piece as it arrives)
            got += await asyncio.wait_for(anext(chunks), 10)
        late = await ask(services, "pkg-1.0-0.conda")
        assert late.outcome == "miss" and late.body.ranges is False
        upstream.release.set()
        assert await receive(late) == FILES["pkg-1.0-0.conda"]
        rest = b"".join([c async for c in chunks])
        await early.body.aclose()
        assert got + rest == FILES["pkg-1.0-0.conda"]
        assert upstream.calls["pkg-1.0-0.conda"] == 2


# two workers over one cache directory


async def test_another_worker_follows_the_download_through_its_temp_file(tmp_path, upstream):
    async with worker(tmp_path, upstream) as a, worker(tmp_path, upstream) as b:
        first = await ask(a, "pkg-1.0-0.conda")
        follower = await ask(b, "pkg-1.0-0.conda")
        mistaken = await ask(b, "md5only-1.0-0.conda")  # a miss of its own in worker b
        assert (first.outcome, follower.outcome) == ("miss", "coalesced")
        assert follower.body.ranges is True
        ranged = await ask(b, "pkg-1.0-0.conda")
        upstream.release.set()
        results = await asyncio.gather(
            receive(first), receive(follower), receive(ranged, 1500, 1600), receive(mistaken)
        )
        assert results[:3] == [FILES["pkg-1.0-0.conda"]] * 2 + [FILES["pkg-1.0-0.conda"][1500:1600]]
        assert upstream.calls["pkg-1.0-0.conda"] == 1


async def test_another_workers_client_with_a_wrong_claim_is_aborted_alone(tmp_path, upstream):
    async with worker(tmp_path, upstream) as a, worker(tmp_path, upstream) as b:
        first = await ask(a, "md5only-1.0-0.conda")
        mistaken = await ask(b, "md5only-1.0-0.conda", claim=WRONG)
        upstream.release.set()
        assert await receive(first) == FILES["md5only-1.0-0.conda"]
        with pytest.raises(ClientAbort, match="X-Expected-Sha256"):
            await receive(mistaken)


async def test_when_the_other_worker_gives_up_its_follower_fetches_the_rest_alone(
    tmp_path, upstream
):
    """RemoteTail: bytes of the other worker's temp file go out as they arrive (all but the
    last); if that download ends without an entry, this client streams on from where it was.
    The body is read as web/responses.py reads it for a whole file: chunks(0, head.size)."""
    upstream.broken.add("pkg-1.0-0.conda")  # worker a's download breaks off; the next is fine
    async with worker(tmp_path, upstream) as a, worker(tmp_path, upstream) as b:
        first = await ask(a, "pkg-1.0-0.conda")
        follower = await ask(b, "pkg-1.0-0.conda")
        chunks = follower.body.chunks(0, follower.head.size)
        try:
            got = await asyncio.wait_for(anext(chunks), 5)  # from worker a's temp file
        except TimeoutError:
            await follower.body.aclose()
            pytest.fail(
                "a whole-file follower in another worker got no byte before the commit: "
                "RemoteTail.chunks takes (0, size) for a range (tails.py, `partial`)"
            )
        assert FILES["pkg-1.0-0.conda"].startswith(got) and 0 < len(got) < upstream.cut
        upstream.release.set()
        with pytest.raises(ClientAbort):
            await receive(first)
        rest = b"".join([c async for c in chunks])
        await follower.body.aclose()
        assert got + rest == FILES["pkg-1.0-0.conda"]
        assert upstream.calls["pkg-1.0-0.conda"] == 2


async def test_when_the_other_worker_fails_its_whole_file_followers_still_get_the_file(
    tmp_path, upstream
):
    upstream.broken.add("pkg-1.0-0.conda")
    async with worker(tmp_path, upstream) as a, worker(tmp_path, upstream) as b:
        first = await ask(a, "pkg-1.0-0.conda")
        follower = await ask(b, "pkg-1.0-0.conda")
        upstream.release.set()
        with pytest.raises(ClientAbort):
            await receive(first)
        assert await receive(follower, 0, follower.head.size) == FILES["pkg-1.0-0.conda"]


async def test_when_the_other_worker_keeps_nothing_its_clients_stream_on_their_own(
    tmp_path, upstream
):
    async with worker(tmp_path, upstream, min_free=2**62) as a, worker(tmp_path, upstream) as b:
        first = await ask(a, "pkg-1.0-0.conda")
        alone = await ask(b, "pkg-1.0-0.conda", claim=SHA["pkg-1.0-0.conda"])
        assert alone.outcome == "miss" and alone.body.ranges is False
        upstream.release.set()
        assert await receive(alone) == await receive(first) == FILES["pkg-1.0-0.conda"]
        assert upstream.calls["pkg-1.0-0.conda"] == 2
