"""README "Status page": it shows "recent uploads (package, version, subdir, when, which
token)". The page's overview is shared and taken again at most every 30 s (it walks the whole
index), so an upload made after someone had looked at the page did not show there (nor its
delete go away) for up to half a minute: the uploader, reloading the page to see it, did not.
The overview is now taken again at once when any worker added or deleted an upload."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package

pytestmark = pytest.mark.integration

WRITER = "status-writer-token-1"
PACKAGES = (
    Pkg("mytool", "1.0", "h0", "linux-64"),
    Pkg("lib", "2.0", "0", "noarch", ext=".tar.bz2"),
)


def recent(proxy_url: str, channel: str = "team") -> list[tuple[str, str, str]]:
    """(filename, subdir, uploaded_by) of the channel's recent uploads, as the page shows."""
    doc = httpx.get(proxy_url + "/", headers={"accept": "application/json"}, timeout=10).json()
    (row,) = [c for c in doc["channels"] if c["name"] == channel]
    return [(u["filename"], u["subdir"], u["uploaded_by"]) for u in row["recent_uploads"]]


def html(proxy_url: str) -> str:
    return httpx.get(proxy_url + "/", timeout=10).text


@pytest.mark.parametrize("workers", [1, 2])
def test_an_upload_or_delete_shows_on_the_status_page_at_once(
    start_proxy, tmp_path: Path, workers: int
) -> None:
    proxy = start_proxy(
        {"team": {}},
        workers=workers,
        tokens={"ci": {"token": WRITER, "roles": {"team": "write"}}},
    )
    auth = {"x-api-key": WRITER}
    for _ in range(4):  # every worker has taken its overview: nothing uploaded yet
        assert recent(proxy.url) == []
    for pkg in PACKAGES:
        path = build_package(pkg, tmp_path / "work", tmp_path / "built")
        with path.open("rb") as f:
            answer = httpx.post(
                f"{proxy.url}/api/channels/team/files",
                files={"files": (path.name, f)},
                headers=auth,
                timeout=30,
            )
        assert answer.status_code == 201, answer.text
        for _ in range(4):  # whichever worker answers
            assert (pkg.filename, pkg.subdir, "ci") in recent(proxy.url)
            assert f"<td>{pkg.name}</td>" in html(proxy.url)
    gone = PACKAGES[0]
    answer = httpx.delete(
        f"{proxy.url}/api/channels/team/packages/{gone.subdir}/{gone.filename}", headers=auth
    )
    assert answer.status_code == 200, answer.text
    for _ in range(4):
        assert [r[0] for r in recent(proxy.url)] == [PACKAGES[1].filename]
        assert f"<td>{gone.name}</td>" not in html(proxy.url)
