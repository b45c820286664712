"""One multipart upload naming one file twice in two cases (`hostile-1.0-H0.conda` and
`hostile-1.0-h0.conda`). File names compare case-folded (one package to a client, one file on a
case-insensitive disk), so the second replaced the first in the same write, and the answer
still listed both as uploaded (201): the uploader's CI believes a package is published that is
not. Refused whole, like the same name twice: 400 naming both, nothing kept. Real proxy process
(upload_env.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.hostile.archives import conda, index_json
from tests.hostile.upload_env import WRITE, Env, env, refused

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module

PAIRS = {
    "same-name": ("hostile-1.0-h0", "hostile-1.0-h0"),
    "version-case": ("hostile-1.0RC1-h0", "hostile-1.0rc1-h0"),
    "build-case": ("hostile-1.0-H0", "hostile-1.0-h0"),
    "version-and-build-case": ("hostile-1.0RC1-H0", "hostile-1.0rc1-h0"),
}


def _multipart(env: Env, stems: tuple[str, ...], force: bool):  # type: ignore[no-untyped-def]
    files = [("files", (f"{s}.conda", conda(index=index_json(s), stem=s))) for s in stems]

    def act() -> tuple[int, bytes]:
        r = httpx.post(
            f"{env.proxy.url}/api/channels/local/files",
            files=files,
            params={"force": "true"} if force else {},
            headers={"x-api-key": WRITE},
            timeout=60,
        )
        return r.status_code, r.content

    return act


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_one_multipart_upload_cannot_name_a_file_twice_in_any_case(env, pair, force):
    first, second = PAIRS[pair]
    error = refused(env, _multipart(env, (first, second), force), 400, "same file twice")
    if first != second:
        assert f"{first}.conda" in error["error"] and f"{second}.conda" in error["error"]


def test_case_variants_in_separate_files_of_other_names_are_still_accepted(env):
    act = _multipart(env, ("hostile-1.0-h0", "hostile-1.1-h0"), False)
    try:
        status, body = act()
        assert status == 201, body
    finally:
        for path in ("linux-64/hostile-1.0-h0.conda", "linux-64/hostile-1.1-h0.conda"):
            env.delete(path)
