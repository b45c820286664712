"""Fixtures shared by the cache layer's in-process tests."""

from __future__ import annotations

from typing import Any

import pytest

from condaproxy.cache import checksums


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the shard indexes decoded into a name -> shard map (checksums.py)."""
    seen: list[int] = []
    decode = checksums.decode_msgpack

    def counted(data: bytes, *args: Any) -> Any:
        seen.append(len(data))
        return decode(data, *args)

    monkeypatch.setattr(checksums, "decode_msgpack", counted)
    return seen


@pytest.fixture
def names_for_every_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the tests' small shard indexes a name map, as a conda-forge-sized one gets."""
    monkeypatch.setattr(checksums, "NAMES_FROM", 0)
