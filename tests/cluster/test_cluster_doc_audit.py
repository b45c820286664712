"""README "Running several replicas" taken at its word: a bucket that does not exist, or
that refuses the credentials, is named by `storage.url` at start-up (never with the secret)
while the replica serves as with the bucket down (/readyz 200, `"storage": "unavailable"`)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import httpx

from tests.cluster.replicas import TOKENS, WRITE, wait_for
from tests.support.s3 import SECRET, STORAGE_ENV, S3Server, storage_section

PKG = "/local/linux-64/datatool-1.0-h2.conda"
PACKAGE = PurePosixPath("/local/linux-64/libzlib-1.3-h0.conda")


def ready(url: str) -> dict[str, object]:
    return dict(httpx.get(url + "/readyz", timeout=10).json())


def unreachable(start_proxy, upstream, tmp_path: Path, s3: S3Server, bucket: str):  # type: ignore[no-untyped-def]
    proxy = start_proxy(
        {"local": {"upstream": upstream.url}, "internal": {}},
        cache=tmp_path / bucket,
        extra=storage_section(s3, bucket),
        env=STORAGE_ENV,
        tokens=TOKENS,
    )
    assert httpx.get(proxy.url + PKG, timeout=30).status_code == 200  # served meanwhile
    ready = httpx.get(proxy.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["storage"] == "unavailable"
    assert SECRET not in proxy.log() and SECRET not in ready.text
    return proxy


def test_a_bucket_that_does_not_exist_is_named_by_storage_url_at_start(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, channel_dir: Path
) -> None:
    proxy = unreachable(start_proxy, upstream, tmp_path, s3_server, "no-such-bucket-here")
    warning = next(line for line in proxy.log().splitlines() if "warning:" in line)
    assert "'storage.url'" in warning and "does not exist" in warning, warning
    refused = httpx.post(
        f"{proxy.url}/api/channels/internal/upload/{PACKAGE.name}",
        content=(channel_dir / PACKAGE.relative_to("/local")).read_bytes(),
        headers={"x-api-key": WRITE},
        timeout=30,
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"].startswith("shared storage unavailable")
    # Once the bucket exists the replica uses it, without a restart.
    s3_server.client().create_bucket(Bucket="no-such-bucket-here")
    assert wait_for(lambda: ready(proxy.url)["storage"] == "ok", 15)
    done = httpx.post(
        f"{proxy.url}/api/channels/internal/upload/{PACKAGE.name}",
        content=(channel_dir / PACKAGE.relative_to("/local")).read_bytes(),
        headers={"x-api-key": WRITE},
        timeout=30,
    )
    assert done.status_code == 201, done.text


def test_refused_credentials_are_named_at_start_without_the_secret(
    upstream, start_proxy, tmp_path: Path
) -> None:
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # this moto checks keys: ours are unknown
    try:
        strict = S3Server().start()
    finally:
        del os.environ["INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        proxy = unreachable(start_proxy, upstream, tmp_path, strict, "some-bucket")
        warning = next(line for line in proxy.log().splitlines() if "warning:" in line)
        assert "'storage.url'" in warning and "'storage.secret_access_key'" in warning, warning
    finally:
        strict.stop()
