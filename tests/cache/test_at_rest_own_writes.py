"""A snapshot this server stores again with the same bytes (an upstream answering a
revalidation with a 200 of an unchanged document, a re-merge) is its own write: it is not
hashed again before the next request is served (it was, whole, after every such 200: a new
inode under a name already checked). Only a file some other hand changed is
(tests/hostile/test_cache_written_over_while_running.py,
tests/hostile/test_metadata_written_over_before_first_use.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import respx
import zstandard

from condaproxy.cache import at_rest
from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, running

UP = "https://up.example/cf"
DOCUMENT = msgspec.json.encode(
    {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {"tool-1.0-0.conda": {"name": "tool", "version": "1.0"}},
    }
)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors at_rest.py hashed."""
    seen: list[int] = []
    real = at_rest.sha256_of_fd

    def counted(fd: int) -> str:
        seen.append(fd)
        return real(fd)

    monkeypatch.setattr(at_rest, "sha256_of_fd", counted)
    return seen


@pytest.mark.parametrize("validators", [{}, {"etag": '"same"'}, {"last-modified": "x"}])
async def test_an_unchanged_200_is_not_hashed_again(
    tmp_path: Path, hashed: list[int], validators: dict[str, Any]
) -> None:
    clock = Clock()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(404)
        route = router.get(f"{UP}/noarch/repodata.json.zst").respond(
            200, content=zstandard.compress(DOCUMENT), headers=validators
        )
        settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=60)
        async with running(create_app(settings, clock=clock)) as client:
            for name in ("repodata.json", "repodata.json.zst"):
                assert (await client.get(f"/cf/noarch/{name}")).status_code == 200
            for _ in range(3):
                clock.now += 61  # stale: revalidated, and the upstream sends it all again
                for name in ("repodata.json", "repodata.json.zst"):
                    served = await client.get(f"/cf/noarch/{name}")
                    assert served.status_code == 200
            assert route.call_count == 4
    assert hashed == []
