"""Upstream msgpack (shard indexes, shards) is decoded under an item budget: its size limit
alone does not bound memory, since a 1-byte empty array becomes a 64-byte list."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest

from condaproxy.rules.codecs import decode_msgpack


def array_of(n: int, item: bytes) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big") + item * n


@pytest.mark.parametrize(
    "bomb",
    [
        array_of(4 << 20, b"\x90"),  # 4 Mi empty arrays in one array
        array_of(4 << 20, b"\x80"),  # 4 Mi empty maps
        array_of(4 << 20, b"\xa0"),  # 4 Mi empty strings
        # many arrays, each under the per-container limit, together past the budget
        array_of(8, array_of(500_000, b"\x90")),
        # a map of maps
        b"\xdf"
        + (8).to_bytes(4, "big")
        + b"".join(
            bytes([0xA1, 0x61 + i])
            + b"\xdf"
            + (500_000).to_bytes(4, "big")
            + b"".join(msgpack.packb(k) + b"\x90" for k in range(500_000))
            for i in range(8)
        ),
    ],
    ids=["empty-arrays", "empty-maps", "empty-strings", "arrays-of-arrays", "maps-of-maps"],
)
def test_a_document_of_more_items_than_the_budget_is_refused(bomb: bytes) -> None:
    with pytest.raises(ValueError):
        decode_msgpack(bomb)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_msgpack(b"\x91" * 100_000 + b"\x90")


def test_refusing_a_bomb_allocates_a_bounded_amount() -> None:
    """Measured in a fresh interpreter: the peak stays far below what the bomb asks for
    (8.4 M empty arrays: ~540 MiB when decoded unbounded)."""
    code = (
        "import resource\n"
        "from condaproxy.rules.codecs import decode_msgpack\n"
        "items = [b'\\xdd' + (700_000).to_bytes(4, 'big') + b'\\x90' * 700_000] * 12\n"
        "doc = b'\\x9c' + b''.join(items)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_msgpack(doc)\n"
        "except ValueError:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    grown_kib = int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    unbounded_kib = 12 * 700_000 * 64 // 1024  # what decoding it all would take
    assert grown_kib < unbounded_kib // 2, (grown_kib, unbounded_kib)


def test_real_documents_decode_as_before() -> None:
    shard = {
        "packages": {
            f"p-{i}-0.tar.bz2": {"name": "p", "depends": ["a >1", "b"], "sha256": bytes(32)}
            for i in range(5000)
        },
        "packages.conda": {},
        "removed": ["x"],
    }
    index = {"info": {"subdir": "linux-64"}, "shards": {f"n{i}": bytes(32) for i in range(60_000)}}
    for document in (shard, index, {7: "int keys stay"}):
        data = msgpack.packb(document, use_bin_type=True)
        assert decode_msgpack(data) == document
