"""An upstream channel whose listing a policy test changes over time (respx, in process)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import msgspec
import zstandard

from condaproxy.settings import ChannelSettings, PolicySettings, Settings
from tests.support.inproc import make_settings, record, repodata, shard, shard_index

UP = "https://up.example/cf"
DAY = 86400.0
T0 = 1_800_000_000.0


class Channel:
    """`files` are served; `records` (file name -> record) are listed; sharded on request."""

    def __init__(self, router: Any, subdir: str = "noarch", sharded: bool = True) -> None:
        self.subdir = subdir
        self.files: dict[str, bytes] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.sharded = sharded
        self.fetched: list[str] = []
        router.route(host="up.example").mock(side_effect=self.answer)

    def add(self, filename: str, timestamp_ms: float | None = None, **fields: Any) -> bytes:
        data = hashlib.sha256(filename.encode()).digest() * 8
        self.files[filename] = data
        extra = {"timestamp": int(timestamp_ms)} if timestamp_ms is not None else {}
        self.records[filename] = record(filename, data, subdir=self.subdir, **extra, **fields)
        return data

    def _shards(self) -> dict[str, bytes]:
        by_name: dict[str, dict[str, Any]] = {}
        for fn, r in self.records.items():
            by_name.setdefault(r["name"], {})[fn] = r
        return {name: shard(rs) for name, rs in by_name.items()}

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/cf/")
        if path.startswith("label/"):  # every label lists the same records
            path = path.split("/", 2)[2]
        self.fetched.append(path)
        subdir, _, name = path.partition("/")
        if subdir != self.subdir:
            return httpx.Response(404)
        if name == "repodata.json.zst":
            body = zstandard.compress(repodata(self.subdir, self.records))
            return httpx.Response(200, content=body)
        if name == "repodata_shards.msgpack.zst":
            if not self.sharded:
                return httpx.Response(404)
            return httpx.Response(200, content=shard_index(self.subdir, self._shards()))
        if name.startswith("shards/"):
            for data in self._shards().values():
                if name == f"shards/{hashlib.sha256(data).hexdigest()}.msgpack.zst":
                    return httpx.Response(200, content=data)
            return httpx.Response(404)
        if name in self.files:
            return httpx.Response(200, content=self.files[name])
        return httpx.Response(404)


def settings(
    tmp: Path,
    cooldown: str | int = "7d",
    channel: dict[str, Any] | None = None,
    **policy: Any,
) -> Settings:
    base = make_settings(
        tmp / "cache", [ChannelSettings("cf", UP, **(channel or {}))], repodata_ttl=0
    )
    return msgspec.structs.replace(base, policy=PolicySettings(cooldown=cooldown, **policy))
