"""What another worker's in-flight note says is read as hostile input (the disk is hostile,
too): garbage where a note belongs (left by a crash, a hand, a full disk) is no note, so the
download is fetched alone, never an exception out of the request. Before: JSON nested past
the parser's depth (it fits in the 4 KiB a note is read in) raised a RecursionError, a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from condaproxy.cache.inflight import InflightNotes

KEY = "ch/linux-64/pkg-1.0-0.conda"

GARBAGE = {
    "arrays nested 2000 deep": b"[" * 2000 + b"]" * 2000,
    "objects nested 1500 deep": b'{"a":' * 1500 + b"1" + b"}" * 1500,
    "not JSON": b"\x00\xff garbage",
    "a list": b"[1, 2, 3]",
    "a number of 5000 digits": b"9" * 5000,
    "the wrong types": b'{"size": "big", "sha256": 7, "temp": 1}',
    "a temp file elsewhere": b'{"size": 1, "sha256": null, "temp": "/etc/passwd"}',
    "empty": b"",
}


@pytest.mark.parametrize("content", list(GARBAGE))
def test_garbage_where_a_note_belongs_is_no_note(tmp_path: Path, content: str) -> None:
    notes = InflightNotes(tmp_path / "inflight", tmp_path / "tmp")
    notes.path(KEY).write_bytes(GARBAGE[content])
    assert notes.head(KEY) is None
