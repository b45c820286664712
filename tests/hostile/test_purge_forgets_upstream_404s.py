"""A broken upstream answers 404 for a while (a CDN that lost a file, a subdir published late,
a mirror mid-sync); the proxy remembers each 404 for `negative_ttl`. The operator purges to
make the proxy ask again, as it does for everything else a purge covers: the remembered 404s
of what the purge covers go with it, and only those. A purge left them, so the 404 repeated
until it expired (`negative_ttl` can be hours).

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import os

import pytest

from tests.support.hostile import HostileSetup

pytestmark = pytest.mark.integration

PKG = "linux-64/small-1.0-0.conda"
# What the upstream lost for a while: the paths it answered 404 for, and the one asked.
LOST = {
    "package": ([f"/{PKG}"], PKG),
    "repodata": (
        ["/linux-64/repodata.json", "/linux-64/repodata.json.zst"],
        "linux-64/repodata.json",
    ),
    "channeldata": (["/channeldata.json"], "channeldata.json"),
}
# Purges that cover each of them.
COVERING = {
    "package": ["", "/ch", "/ch/linux-64", f"/ch/{PKG}", "?package=small"],
    "repodata": ["", "/ch", "/ch/linux-64", "?metadata_only=true"],
    "channeldata": ["", "/ch", "?metadata_only=true"],
}
# Purges that do not.
ASIDE = {
    "package": ["/ch/noarch", "/other", "/ch/linux-64/other-1.0-0.conda", "?metadata_only=true"],
    "repodata": ["/ch/noarch", "/other", "/ch/linux-64/other-1.0-0.conda", "?package=small"],
    "channeldata": ["/other", "?package=small"],
}


class Setup(HostileSetup):
    def get(self, path: str) -> int:  # type: ignore[override]
        return self.client.get(f"{self.proxy.url}/ch/{path}").status_code

    def lost_then_back(self, what: str) -> str:
        """The upstream 404s `what`, the proxy remembers it, then the upstream has it again."""
        self.purge("")
        self.upstream.reset()
        paths, asked = LOST[what]
        if what == "channeldata":
            (self.upstream.directory / "channeldata.json").write_text('{"packages": {}}')
        if what == "package":
            assert self.get("linux-64/repodata.json") == 200  # its record, before its 404
        for path in paths:
            self.upstream.override(path, b"lost", 404)
        assert self.get(asked) == 404
        self.upstream.reset()  # back upstream
        assert self.get(asked) == 404, "the 404 is remembered (negative_ttl)"
        return asked


setup = Setup.fixture("purge404", {PKG: os.urandom(1024)}, channels=("ch", "other"))


@pytest.mark.parametrize(
    ("what", "scope"), [(what, scope) for what, scopes in COVERING.items() for scope in scopes]
)
def test_a_purge_forgets_the_upstream_404s_it_covers(setup: Setup, what: str, scope: str) -> None:
    asked = setup.lost_then_back(what)
    setup.purge(scope)
    assert setup.get(asked) == 200


@pytest.mark.parametrize(
    ("what", "scope"), [(what, scope) for what, scopes in ASIDE.items() for scope in scopes]
)
def test_a_purge_keeps_the_upstream_404s_it_does_not_cover(
    setup: Setup, what: str, scope: str
) -> None:
    asked = setup.lost_then_back(what)
    setup.purge(scope)
    assert setup.get(asked) == 404
