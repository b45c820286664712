"""Uploaded file names compare case-folded: uploading `hostile-1.0-h0.conda` over a stored
`hostile-1.0-H0.conda` is a 409 (it is the same package to a client), and with force it
replaces it. DELETE compared exactly: the operator removing the package by the name a client
uses got a 404 while it stayed installable. Real proxy process (upload_env.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.hostile.archives import conda, index_json
from tests.hostile.upload_env import WRITE, env, post

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module

STORED = "hostile-1.0RC1-H0"  # names are lower-case; versions and builds need not be
ASKED = ["hostile-1.0rc1-h0", "HOSTILE-1.0RC1-H0", "hOSTILE-1.0Rc1-h0", STORED]


@pytest.mark.parametrize("asked", ASKED)
def test_an_upload_is_deleted_by_its_name_in_any_case(env, asked):
    data = conda(index=index_json(STORED), stem=STORED)
    assert post(env.proxy, f"{STORED}.conda", data).status_code == 201
    try:
        gone = httpx.delete(
            f"{env.proxy.url}/api/channels/local/packages/linux-64/{asked}.conda",
            headers={"x-api-key": WRITE},
        )
        assert gone.status_code == 200, gone.text
        assert gone.json()["deleted"]["filename"] == f"{STORED}.conda"
        assert f"linux-64/{STORED}.conda" not in env.listing()
        listed = httpx.get(f"{env.proxy.url}/local/linux-64/repodata.json").json()
        assert f"{STORED}.conda" not in listed["packages.conda"]
        assert httpx.get(f"{env.proxy.url}/local/linux-64/{STORED}.conda").status_code == 404
    finally:
        if f"linux-64/{STORED}.conda" in env.listing():
            env.delete(f"linux-64/{STORED}.conda")


def test_deleting_a_name_never_uploaded_is_still_a_404(env):
    gone = httpx.delete(
        f"{env.proxy.url}/api/channels/local/packages/linux-64/never-1.0-h0.conda",
        headers={"x-api-key": WRITE},
    )
    assert gone.status_code == 404
