"""Typed keys of the metadata index: what an entry is (its kind) and which subdir or file it is
for (its path below the channels), instead of string prefixes spelled in many places.

`str(key)` is the stored form (`repodata:conda-forge/linux-64`), so existing caches stay
readable. Pure."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MetaKind(enum.Enum):
    REPODATA = "repodata"  # a subdir's upstream repodata snapshot and its variants
    CURRENT = "current"  # a subdir's upstream current_repodata.json (conda's classic solver)
    SHARD_INDEX = "shards"  # a subdir's upstream CEP-16 shard index
    MERGED = "merged"  # repodata with uploads merged over the upstream's
    MERGED_SHARDS = "merged-shards"  # the shard index with uploads merged in
    FILE = "meta"  # other revalidated files (channeldata.json, run_exports.json ...)


@dataclass(frozen=True)
class MetaKey:
    kind: MetaKind
    path: str  # `<channel>[/label/<label>]/<subdir>`, or a file's key for FILE

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.path}"

    @classmethod
    def parse(cls, text: str) -> MetaKey | None:
        kind, sep, path = text.partition(":")
        try:
            return cls(MetaKind(kind), path) if sep else None
        except ValueError:
            return None

    @property
    def lock(self) -> str:
        """The single-flight lock of this entry (across workers)."""
        return f"meta:{self}"

    @classmethod
    def repodata(cls, subdir_key: str) -> MetaKey:
        return cls(MetaKind.REPODATA, subdir_key)

    @classmethod
    def current(cls, subdir_key: str) -> MetaKey:
        return cls(MetaKind.CURRENT, subdir_key)

    @classmethod
    def shard_index(cls, subdir_key: str) -> MetaKey:
        return cls(MetaKind.SHARD_INDEX, subdir_key)

    @classmethod
    def merged(cls, subdir_key: str) -> MetaKey:
        return cls(MetaKind.MERGED, subdir_key)

    @classmethod
    def merged_shards(cls, subdir_key: str) -> MetaKey:
        return cls(MetaKind.MERGED_SHARDS, subdir_key)

    @classmethod
    def file(cls, file_key: str) -> MetaKey:
        return cls(MetaKind.FILE, file_key)
