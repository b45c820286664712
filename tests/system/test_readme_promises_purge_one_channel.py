"""README "Operating it": `DELETE /api/cache/conda-forge` purges "one channel" (and
`/conda-forge/linux-64` one subdir, `/conda-forge/linux-64/<file>` one file, `?package=` every
file of a package). The store is content-addressed, so two channels over the same upstream (the
README's own `team` over conda-forge) share each file's blob, and a purge deleted the blob under
the other channel's entry too: that channel's next request downloaded the file again, while its
stats still counted it as cached. A purge now deletes only blobs nothing outside its scope
names; what it covers is still gone (the next request for it is a miss)."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.integration

ADMIN = "purge-admin-token-1"
FILE = "linux-64/libzlib-1.3-h0.conda"
SCOPES = {
    "channel": "",
    "subdir": "/linux-64",
    "file": f"/{FILE}",
    "package": "?package=libzlib",
}


@pytest.mark.parametrize("scope", sorted(SCOPES))
@pytest.mark.parametrize("other", ["team", "cf/mirror"])
def test_a_purge_of_one_channel_leaves_the_others_cached(
    start_proxy, upstream, scope: str, other: str
) -> None:
    proxy = start_proxy(
        {"cf": {"upstream": upstream.url}, other: {"upstream": upstream.url}},
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
    )
    for channel in ("cf", other):
        assert httpx.get(f"{proxy.url}/{channel}/{FILE}", timeout=30).status_code == 200
        # A small file is committed just after its client has it (the write-behind, within
        # a second; a request meanwhile is COALESCED), and a purge drops commits still
        # waiting: wait until it is cached.
        deadline = time.monotonic() + 10
        while httpx.get(f"{proxy.url}/{channel}/{FILE}", timeout=30).headers["x-cache"] != "HIT":
            assert time.monotonic() < deadline, "never cached"
            time.sleep(0.05)
    fetched = upstream.count("GET", f"/{FILE}")

    path = f"/api/cache/cf{SCOPES[scope]}"
    answer = httpx.delete(proxy.url + path, headers={"x-api-key": ADMIN}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["removed"]["files"] >= 1

    kept = httpx.get(f"{proxy.url}/{other}/{FILE}", timeout=30)
    assert kept.status_code == 200 and kept.headers["x-cache"] == "HIT", kept.headers
    assert upstream.count("GET", f"/{FILE}") == fetched  # not downloaded again
    purged = httpx.get(f"{proxy.url}/cf/{FILE}", timeout=30)
    assert purged.status_code == 200 and purged.headers["x-cache"] == "MISS"
    assert purged.content == kept.content
