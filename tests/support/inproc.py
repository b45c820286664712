"""The whole proxy in this process, for tests: settings built in code, an injected clock, an
upstream channel described to respx, the services behind a running app, and a bound on every
wait. No subprocess, no sleeping for time: time moves when a test moves the clock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import msgpack
import msgspec
import zstandard

from condaproxy.rules.codecs import zstd_decompress
from condaproxy.rules.merge import shard_bytes
from condaproxy.settings import (
    CacheSettings,
    ChannelSettings,
    MetricsSettings,
    Secret,
    Settings,
    TokenSettings,
    UploadSettings,
    UpstreamSettings,
)
from condaproxy.web.services import Services

WAIT = 20.0  # seconds any single wait in a test may take before it fails


class Clock:
    """The proxy's time, moved by the test."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token(name: str, value: str, **roles: str) -> TokenSettings:
    """A proxy token; `roles` maps channel names (or `star` for "*") to a role."""
    return TokenSettings(
        name, Secret(value), {("*" if k == "star" else k): v for k, v in roles.items()}
    )


def make_settings(
    cache_path: Path,
    channels: Iterable[ChannelSettings],
    tokens: Iterable[TokenSettings] = (),
    uploads: UploadSettings | None = None,
    metrics_token: str | None = None,
    **cache: Any,
) -> Settings:
    """Settings for a test: `cache` holds CacheSettings fields (ttl, max_size, min_free ...)."""
    cache.setdefault("min_free", 0)  # a test machine's disk may be fuller than the default
    return Settings(
        cache=CacheSettings(path=cache_path, **cache),
        upstream=UpstreamSettings(connect_timeout=2, read_timeout=5),
        uploads=uploads or UploadSettings(),
        metrics=MetricsSettings(Secret(metrics_token) if metrics_token else None),
        channels={c.name: c for c in channels},
        tokens={t.name: t for t in tokens},
        source="<test>",
    )


# an upstream channel, as respx routes


def record(filename: str, data: bytes, **fields: Any) -> dict[str, Any]:
    """The repodata record an indexer would write for `data` under `filename`."""
    name, version, build = filename.removesuffix(".conda").removesuffix(".tar.bz2").rsplit("-", 2)
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
        "size": len(data),
        **fields,
    }


def repodata(subdir: str, records: Mapping[str, Mapping[str, Any]]) -> bytes:
    return msgspec.json.encode(
        {
            "info": {"subdir": subdir},
            "packages": {fn: r for fn, r in records.items() if fn.endswith(".tar.bz2")},
            "packages.conda": {fn: r for fn, r in records.items() if fn.endswith(".conda")},
            "repodata_version": 1,
        }
    )


def shard(records: Mapping[str, Mapping[str, Any]]) -> bytes:
    """A CEP-16 shard of `records` (hex checksums become raw bytes), zstd-compressed."""
    return shard_bytes({fn: dict(r) for fn, r in records.items()})


def shard_index(subdir: str, shards: Mapping[str, bytes]) -> bytes:
    """A CEP-16 index naming each shard by the sha256 of its bytes."""
    index = {
        "version": 1,
        "info": {"subdir": subdir, "base_url": "./", "shards_base_url": "./shards/"},
        "shards": {name: hashlib.sha256(data).digest() for name, data in shards.items()},
    }
    return zstandard.compress(msgpack.packb(index))


def decode_index(data: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = msgpack.unpackb(zstd_decompress(data))
    return decoded


def upstream_subdir(
    router: Any,
    base: str,
    subdir: str,
    files: Mapping[str, bytes],
    sharded: bool = False,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The upstream at `base` lists `files` for `subdir` (plus records `extra` whose files it
    does not serve), serves them, and has shards if `sharded`. Returns the package routes."""
    records = {fn: record(fn, data) for fn, data in files.items()} | dict(extra or {})
    router.get(f"{base}/{subdir}/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata(subdir, records))
    )
    if sharded:
        by_name: dict[str, dict[str, Any]] = {}
        for fn, r in records.items():
            by_name.setdefault(r["name"], {})[fn] = r
        shards = {name: shard(rs) for name, rs in by_name.items()}
        router.get(f"{base}/{subdir}/repodata_shards.msgpack.zst").respond(
            200, content=shard_index(subdir, shards)
        )
        for data in shards.values():
            digest = hashlib.sha256(data).hexdigest()
            router.get(f"{base}/{subdir}/shards/{digest}.msgpack.zst").respond(200, content=data)
    else:
        router.get(f"{base}/{subdir}/repodata_shards.msgpack.zst").respond(404)
    return {
        fn: router.get(f"{base}/{subdir}/{fn}").respond(200, content=data)
        for fn, data in files.items()
    }


def streamed(data: bytes, status: int = 200) -> httpx.Response:
    """A response for an httpx MockTransport whose body is still to be read, as off a socket
    (a Response made with `content=` counts as read already, and `aiter_raw` refuses it)."""
    headers = {"content-length": str(len(data))}
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(data))


# the app, running


def services_of(app: Any) -> Services:
    """The services a running app built (its Starlette app's state, below the ASGI layers)."""
    layer = app
    while not hasattr(getattr(layer, "state", None), "services"):
        layer = layer.app
    services: Services = layer.state.services
    return services


@contextlib.asynccontextmanager
async def running(
    app: Any, base_url: str = "http://proxy.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (as a server would), and an httpx client speaking to it over
    ASGI, in the test's own event loop; shut it down afterwards."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "state": {}}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), WAIT)
    assert started["type"] == "lifespan.startup.complete", started
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), WAIT)
        await asyncio.wait_for(task, WAIT)


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait for background work (a prefetch job, a download's commit) to reach a state."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def built(workdir: Path, *packages: Any) -> dict[str, bytes]:
    """Real packages (tests.support.channel.Pkg), built with conda-package-handling in this
    process: file name -> bytes."""
    from tests.support.channel import build_package

    out = {}
    for i, pkg in enumerate(packages):
        path = build_package(pkg, workdir / f"src{i}", workdir / f"out{i}")
        out[pkg.filename] = path.read_bytes()
    return out


def sample(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` with `labels` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
