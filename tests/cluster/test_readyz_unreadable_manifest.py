"""A manifest in the bucket that this proxy cannot read (damaged, or written by something else)
is that channel's problem, logged as such: the bucket itself answers, so /readyz keeps saying
`"storage": "ok"` (and condaproxy_shared_up{dependency="storage"} stays 1). The poll counted
the manifest's refusal as a failed round, so the bucket read "unavailable" for good."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.cluster.replicas import wait_for
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

MANIFEST = "prod/uploads/manifests/local.json"


def storage(url: str) -> str:
    return str(httpx.get(url + "/readyz", timeout=10).json()["storage"])


def test_an_unreadable_manifest_is_not_the_bucket_down(
    replicas, s3_server: S3Server, bucket: str
) -> None:
    (a,) = replicas(1, 0.3)
    assert wait_for(lambda: storage(a.url) == "ok", 10)
    s3_server.client().put_object(Bucket=bucket, Key=MANIFEST, Body=b"{not a manifest")
    assert wait_for(lambda: "is not a manifest" in a.log_path.read_text(), 10)
    seen = []
    for _ in range(8):  # several poll rounds
        seen.append(storage(a.url))
        time.sleep(0.25)
    assert set(seen) == {"ok"}, seen
