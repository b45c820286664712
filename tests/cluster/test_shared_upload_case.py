"""With [storage], an upload whose file name differs from an existing one only in case is the
same file too (the bucket's manifest is changed by conditional writes, not the local store):
a 409 without `force`, a replacement with it, never both listed, on every replica."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import WRITE, start_replicas, wait_for
from tests.support.channel import Pkg, build_package
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration


def post(proxy_url: str, path: Path, force: bool = False) -> httpx.Response:
    return httpx.post(
        f"{proxy_url}/api/channels/local/upload/{path.name}",
        content=path.read_bytes(),
        params={"force": "true"} if force else {},
        headers={"x-api-key": WRITE},
        timeout=30,
    )


def listed(proxy_url: str) -> set[str]:
    got = httpx.get(f"{proxy_url}/local/linux-64/repodata.json", timeout=30)
    files = set(got.json().get("packages.conda", {})) if got.status_code == 200 else set()
    return {name for name in files if name.lower().startswith("casetool-")}


def test_a_case_variant_upload_replaces_only_with_force_on_every_replica(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    lower = build_package(Pkg("casetool", "1.0", "h0", "linux-64"), tmp_path / "w", tmp_path / "o")
    mixed = build_package(Pkg("casetool", "1.0", "H0", "linux-64"), tmp_path / "w", tmp_path / "o")
    a, b = start_replicas(start_proxy, upstream.url, tmp_path, s3_server, bucket, 2, 0.5)
    assert post(a.url, lower).status_code == 201
    refused = post(b.url, mixed)
    assert refused.status_code == 409, refused.text
    assert lower.name in refused.json()["error"]
    assert post(b.url, mixed, force=True).status_code == 201
    assert wait_for(lambda: listed(a.url) == {mixed.name}, 10), listed(a.url)
    assert listed(b.url) == {mixed.name}
