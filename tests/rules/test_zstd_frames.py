"""The whole-frames rule agrees with a strict zstd decoder on every way a .zst can end early,
and accepts what real encoders write (checksums, no content size, several frames, skippable
frames, multithreaded output)."""

from __future__ import annotations

import os

import pytest
import zstandard

from condaproxy.rules.zstd_frames import zstd_problem

DOCUMENTS = [b"", b"{}", os.urandom(300_000), b'{"name": "pkg", "depends": []}, ' * 30_000]
ENCODERS = [
    {},
    {"write_checksum": True},
    {"write_content_size": False, "write_checksum": True},
    {"level": 19},
    {"threads": 2, "write_checksum": True},
]
SKIPPABLE = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"


def strictly_whole(data: bytes) -> bool:
    """Whether a strict decoder reads `data` to the end of its frames."""
    try:
        reader = zstandard.ZstdDecompressor().decompressobj()
        rest = data
        while rest:
            reader.decompress(rest)
            if not reader.eof:
                return False
            rest = reader.unused_data
            reader = zstandard.ZstdDecompressor().decompressobj()
        return True
    except zstandard.ZstdError:
        return False


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: f"{len(d)}B")
@pytest.mark.parametrize("encoder", ENCODERS, ids=str)
def test_whole_frames_pass_and_every_cut_is_refused(document: bytes, encoder: dict) -> None:
    whole = zstandard.ZstdCompressor(**encoder).compress(document)
    assert zstd_problem(whole) is None
    assert zstd_problem(whole + whole) is None
    assert zstd_problem(SKIPPABLE + whole + SKIPPABLE) is None
    for cut in range(1, min(len(whole), 64)):
        assert zstd_problem(whole[:-cut]) is not None, cut
        assert not strictly_whole(whole[:-cut])  # the rule refuses what decoders refuse


def test_streamed_frames_without_a_content_size_pass_whole_and_fail_cut() -> None:
    chunker = zstandard.ZstdCompressor(write_checksum=True).chunker(chunk_size=4096)
    data = b"".join(chunker.compress(os.urandom(200_000) * 2)) + b"".join(chunker.finish())
    assert zstd_problem(data) is None
    assert "checksum" in (zstd_problem(data[:-4]) or "")
    assert "cut short" in (zstd_problem(data[: len(data) // 2]) or "")


@pytest.mark.parametrize(
    "data",
    [b"", b"{}", b"\x28\xb5\x2f", SKIPPABLE, SKIPPABLE[:-1], zstandard.compress(b"x") + b"\0"],
    ids=["empty", "json", "magic-cut", "only-skippable", "skippable-cut", "trailing-byte"],
)
def test_anything_but_whole_frames_is_refused(data: bytes) -> None:
    assert zstd_problem(data) is not None


def test_a_body_of_millions_of_empty_blocks_costs_a_bounded_walk() -> None:
    """Each empty raw block is 3 bytes: 8 MB of them would be 2.7 million Python steps."""
    frame_header = b"\x28\xb5\x2f\xfd\x00\x00"  # magic, descriptor, window descriptor
    empty, last = (0).to_bytes(3, "little"), (1).to_bytes(3, "little")
    assert (
        zstd_problem(frame_header + empty * 998 + last, max_blocks=1000) is None
    )  # 1 frame, 999 blocks
    hostile = frame_header + empty * 2_700_000 + last
    assert "more blocks" in (zstd_problem(hostile, max_blocks=1000) or "")
    skippables = SKIPPABLE * 2000 + zstandard.compress(b"x")
    assert "more frames" in (zstd_problem(skippables, max_blocks=1000) or "")
