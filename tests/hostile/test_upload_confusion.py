"""Uploads that change under a client's feet, and uploaders reaching beyond their channel, against
a real proxy process.

- A file replaced with `force=true` has new bytes under the old name. A client that read the
  old record (rattler, from its cached repodata) asks with the old X-Expected-Sha256: like an
  upstream file whose record contradicts the claim, it must get a 409 naming the sha256 now
  published, never 200 with bytes it will reject after the download (or worse, keep).
- Tokens: write on channel A is no right on channel B, read is no right to write, whatever
  form the token comes in (header or `/t/<token>/`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package

pytestmark = pytest.mark.e2e

WRITE_A, WRITE_B, READ_A = "write-a-token-1", "write-b-token-1", "read-a-token-1"
TOOL = Pkg("tool", "1.0", "h0", "linux-64")


@pytest.fixture
def proxy(start_proxy):
    return start_proxy(
        {"a": {}, "b": {}},
        tokens={
            "wa": {"token": WRITE_A, "roles": {"a": "write"}},
            "wb": {"token": WRITE_B, "roles": {"b": "write"}},
            "ra": {"token": READ_A, "roles": {"a": "read"}},
        },
    )


def built(tmp_path: Path, tag: str) -> bytes:
    """The same file name, other bytes each time (the payload is random)."""
    return build_package(TOOL, tmp_path / f"work-{tag}", tmp_path / f"out-{tag}").read_bytes()


def post(url: str, channel: str, data: bytes, token: str, **params: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/channels/{channel}/upload/{TOOL.filename}",
        content=data,
        params=params,
        headers={"x-api-key": token},
        timeout=60,
    )


def test_a_replaced_upload_is_a_409_to_a_client_expecting_the_old_bytes(proxy, tmp_path):
    old, new = built(tmp_path, "old"), built(tmp_path, "new")
    old_sha, new_sha = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    assert post(proxy.url, "a", old, WRITE_A).status_code == 201
    url = f"{proxy.url}/a/linux-64/{TOOL.filename}"
    assert httpx.get(url, headers={"x-expected-sha256": old_sha}).content == old

    assert post(proxy.url, "a", new, WRITE_A, force="true").status_code == 201
    for method in ("GET", "HEAD"):
        stale = httpx.request(method, url, headers={"x-expected-sha256": old_sha})
        assert stale.status_code == 409, (method, stale.status_code)
    body = httpx.get(url, headers={"x-expected-sha256": old_sha}).json()
    assert body["published_sha256"] == new_sha and old_sha in body["error"]
    # A client with the new record, or with none, gets the new bytes.
    assert httpx.get(url, headers={"x-expected-sha256": new_sha}).content == new
    assert httpx.get(url).content == new


def test_write_on_one_channel_is_no_right_on_another(proxy, tmp_path):
    data = built(tmp_path, "a")
    assert post(proxy.url, "a", data, WRITE_A).status_code == 201
    assert post(proxy.url, "b", data, WRITE_A).status_code == 403
    assert post(proxy.url, "a", data, READ_A, force="true").status_code == 403
    path_form = httpx.post(
        f"{proxy.url}/t/{WRITE_A}/api/channels/b/upload/{TOOL.filename}", content=data
    )
    assert path_form.status_code in (401, 403, 404), path_form.text
    for token in (WRITE_B, READ_A):
        gone = httpx.delete(
            f"{proxy.url}/api/channels/a/packages/linux-64/{TOOL.filename}",
            headers={"x-api-key": token},
        )
        assert gone.status_code == 403, (token, gone.text)
    listing = httpx.get(f"{proxy.url}/api/channels/a/packages").json()["packages"]
    assert [p["filename"] for p in listing] == [TOOL.filename]
    assert httpx.get(f"{proxy.url}/api/channels/b/packages").json()["packages"] == []
