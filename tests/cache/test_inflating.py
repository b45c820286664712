"""Inflating: a `.json.zst` body decompressed while it is written. What it hands the build
must be what decompressing the finished file gives (document, hash, rewrite flag), its errors
the same UpstreamErrors, and its temp document never outlive it unless a build claimed it."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from condaproxy.cache.inflating import Inflating
from condaproxy.rules.errors import UpstreamError

DOC = b'{"info": {"subdir": "linux-64"}, "packages": {"a": {"x": "' + b"y" * 3_000_000 + b'"}}}'
URL = "http://up/linux-64/repodata.json.zst"


def body_file(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "body.partial"
    return path, os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


async def feed(inflating: Inflating, fd: int, data: bytes, piece: int = 100_000) -> None:
    """Write `data` as a download would: in pieces, yielding to the loop between them."""
    for i in range(0, len(data), piece):
        os.write(fd, data[i : i + piece])
        inflating.wrote(len(data[i : i + piece]))
        await asyncio.sleep(0)


def partials(tmp_path: Path) -> list[Path]:
    return list(tmp_path.glob("*.json.partial"))


def test_the_document_hash_and_flags_are_those_of_the_finished_body(tmp_path: Path) -> None:
    body = zstandard.ZstdCompressor().compress(DOC.replace(b'"a"', b'"base_url"'))

    async def run() -> None:
        _, fd = body_file(tmp_path)
        inflating = Inflating(fd, URL, str(tmp_path), 8 << 20)
        await feed(inflating, fd, body)
        inflating.end()
        got = await inflating.result()
        inflating.discard()  # claimed: the build owns the document now
        os.close(fd)
        assert Path(got.json_path).read_bytes() == DOC.replace(b'"a"', b'"base_url"')
        assert got.needs_rewrite is True
        assert got.body_sha256 == hashlib.sha256(body).hexdigest()
        assert got.body_size == len(body)
        Path(got.json_path).unlink()

    asyncio.run(run())


def test_an_unclaimed_document_is_deleted_by_discard(tmp_path: Path) -> None:
    body = zstandard.ZstdCompressor().compress(DOC)

    async def run() -> None:
        _, fd = body_file(tmp_path)
        inflating = Inflating(fd, URL, str(tmp_path), 8 << 20)
        await feed(inflating, fd, body)
        inflating.end()
        await asyncio.shield(inflating._done)  # finished, nobody claimed it (a check refused)
        assert len(partials(tmp_path)) == 1
        inflating.discard()
        os.close(fd)

    asyncio.run(run())
    assert partials(tmp_path) == []


def test_a_download_that_fails_midway_stops_the_thread_and_keeps_nothing(tmp_path: Path) -> None:
    body = zstandard.ZstdCompressor().compress(DOC)

    async def run() -> None:
        _, fd = body_file(tmp_path)
        inflating = Inflating(fd, URL, str(tmp_path), 8 << 20)
        await feed(inflating, fd, body[: len(body) // 2])
        inflating.discard()  # the download raised: no end(), the thread is waiting for bytes
        with pytest.raises(UpstreamError, match="did not complete"):
            await asyncio.wait_for(inflating.result(), 10)
        os.close(fd)

    asyncio.run(run())
    assert partials(tmp_path) == []


@pytest.mark.parametrize(
    ("case", "body", "limit", "message"),
    [
        ("not zstd", os.urandom(200_000), 8 << 20, "not valid zstd"),
        ("over the limit", zstandard.ZstdCompressor().compress(DOC), 1 << 20, "max_repodata_size"),
    ],
)
def test_errors_are_the_upstream_errors_of_the_finished_body(
    tmp_path: Path, case: str, body: bytes, limit: int, message: str
) -> None:
    async def run() -> None:
        _, fd = body_file(tmp_path)
        inflating = Inflating(fd, URL, str(tmp_path), limit)
        await feed(inflating, fd, body)
        inflating.end()
        with pytest.raises(UpstreamError, match=message):
            await inflating.result()
        inflating.discard()
        os.close(fd)

    asyncio.run(run())
    assert partials(tmp_path) == [], case
