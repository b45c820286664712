"""Uploads shared by replicas: durable in the bucket before the 201, recorded only by
conditional writes (none lost under concurrency), visible on every replica within
`cluster.poll_interval`, and installable through another replica than the one uploaded to."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import WRITE, start_replicas, wait_for
from tests.support.channel import Pkg, build_package
from tests.support.clients import rattler_install
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

POLL = 0.5


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("cluster-uploads")
    tool = Pkg("internal-tool", "1.0", "h0", "linux-64", ("libcore >=2", "pyutil"))
    built = [build_package(tool, base / "work", base / "out")]
    for i in range(30):
        pkg = Pkg(f"many{i}", "1.0", "h0", "linux-64")
        built.append(build_package(pkg, base / "work", base / "out"))
    return built


def post(proxy_url: str, channel: str, path: Path, **params: str) -> httpx.Response:
    return httpx.post(
        f"{proxy_url}/api/channels/{channel}/upload/{path.name}",
        content=path.read_bytes(),
        params=params,
        headers={"x-api-key": WRITE},
        timeout=30,
    )


def listed(proxy_url: str, channel: str) -> set[str]:
    got = httpx.get(f"{proxy_url}/{channel}/linux-64/repodata.json", timeout=30)
    return set(got.json().get("packages.conda", {})) if got.status_code == 200 else set()


def test_an_upload_is_in_the_bucket_before_its_201_and_installs_through_another_replica(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str, packages
) -> None:
    a, b = start_replicas(start_proxy, upstream.url, tmp_path, s3_server, bucket, 2, POLL)
    tool = packages[0]
    created = post(a.url, "local", tool)
    assert created.status_code == 201, created.text
    keys = s3_server.keys(bucket)  # read right after the 201: nothing may still be on its way
    assert "prod/uploads/manifests/local.json" in keys
    manifest = json.loads(
        s3_server.client()
        .get_object(Bucket=bucket, Key="prod/uploads/manifests/local.json")["Body"]
        .read()
    )
    entry = manifest["subdirs"]["linux-64"]["files"][tool.name]
    sha = entry["sha256"]
    assert f"prod/uploads/cas/sha256/{sha[:2]}/{sha}" in keys
    started = time.monotonic()
    assert wait_for(lambda: tool.name in listed(b.url, "local"), POLL + 5)
    assert time.monotonic() - started <= POLL + 1.0, "not visible within the poll bound"
    result = rattler_install(f"{b.url}/local", tmp_path / "client", True, "internal-tool")
    assert result["ok"], result.get("trace")
    assert (tmp_path / "client/prefix/share/internal-tool/1.0.txt").is_file()
    # A delete through B reaches A within the bound too.
    gone = httpx.delete(
        f"{b.url}/api/channels/local/packages/linux-64/{tool.name}",
        headers={"x-api-key": WRITE},
        timeout=30,
    )
    assert gone.status_code == 200, gone.text
    assert wait_for(lambda: tool.name not in listed(a.url, "local"), POLL + 5)


def test_concurrent_uploads_across_replicas_lose_nothing(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str, packages
) -> None:
    proxies = start_replicas(start_proxy, upstream.url, tmp_path, s3_server, bucket, 3, POLL)
    many = packages[1:]

    async def all_at_once() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{proxies[i % 3].url}/api/channels/internal/upload/{p.name}",
                        content=p.read_bytes(),
                        headers={"x-api-key": WRITE},
                    )
                    for i, p in enumerate(many)
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(all_at_once()) == [201] * len(many)
    names = {p.name for p in many}
    for proxy in proxies:
        assert wait_for(lambda p=proxy: listed(p.url, "internal") >= names, POLL + 5), proxy.url


@pytest.mark.parametrize(
    "garbage", [b"not json", b'{"subdirs": {"linux-64": {"files": {"x": 1}}}}']
)
def test_a_manifest_this_proxy_cannot_read_is_never_overwritten(
    replicas, s3_server: S3Server, bucket: str, packages, garbage: bytes
) -> None:
    (a,) = replicas(1)
    key = "prod/uploads/manifests/internal.json"
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=garbage)
    refused = post(a.url, "internal", packages[1])
    assert refused.status_code == 503, refused.text
    assert "is not a manifest" in refused.json()["error"]
    assert s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read() == garbage
