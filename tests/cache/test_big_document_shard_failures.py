"""A package miss in a big subdir reads the package's shard first (52c1d3b), but when the
shards fail (the index or a shard answers 5xx, or is no shard) while the repodata JSON is on
disk, the JSON still answers, as it did before shards came first: the shards are a shortcut,
not a new way for a download to fail."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.cache import checksums
from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, upstream_subdir

UP = "https://up.example/cf"
FILES = {f"pkg{i}-1.0-0.conda": b"%d" % i * 500 for i in range(5)}
IDENTITY = {"accept-encoding": "identity"}  # the JSON itself is made on disk

FAILURES = {
    "index 503": (r".*/repodata_shards\.msgpack\.zst$", httpx.Response(503)),
    "index garbage": (r".*/repodata_shards\.msgpack\.zst$", httpx.Response(200, content=b"no")),
    "shard 502": (r".*/shards/.*", httpx.Response(502)),
    "shard garbage": (r".*/shards/.*", httpx.Response(200, content=b"\x28\xb5\x2f\xfdno")),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failing_shards_fall_back_to_the_json_on_disk(
    tmp_path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.setattr(checksums, "BIG", 64)  # every document counts as big
    pattern, answer = FAILURES[failure]
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=600)
    with respx.mock(assert_all_called=False) as mocked:
        mocked.get(url__regex=pattern).mock(return_value=answer)
        upstream_subdir(mocked, UP, "linux-64", FILES, sharded=True)
        with TestClient(create_app(settings, clock=Clock())) as client:
            assert client.get("/cf/linux-64/repodata.json", headers=IDENTITY).status_code == 200
            for fn, data in FILES.items():
                got = client.get(f"/cf/linux-64/{fn}")
                assert got.status_code == 200, (fn, got.status_code, got.text[:200])
                assert got.content == data
                assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
