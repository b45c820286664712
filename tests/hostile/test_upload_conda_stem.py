"""A hostile uploader sends `hostile-1.0-h0.conda` whose zip holds `info-zzz-9-0.tar.zst` and
`pkg-zzz-9-0.tar.zst`. conda (conda-package-streaming) looks for the members named after the
file and cannot install it (`didn't find info-hostile-1.0-h0 component`); rattler unpacks any
`*.tar.zst` it meets and installs it: one file, two outcomes, a channel entry that breaks
conda's installs. Refused: 400 naming the member, nothing kept. Real proxy (upload_env.py)."""

from __future__ import annotations

from pathlib import Path

import conda_package_streaming.package_streaming as cps
import pytest

from tests.hostile.archives import STEM, conda_bytes, index_json, index_member, tar_bytes, zstd
from tests.hostile.upload_env import env, post, refused, upload

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module

OTHER_STEMS = {
    "another-package": "zzz-9-0",
    "another-case": "Hostile-1.0-H0",
    "another-version": "hostile-1.1-h0",
}


def _conda(member_stem: str) -> bytes:
    info = zstd(tar_bytes([index_member(index_json(STEM))]))
    return conda_bytes(info, zstd(tar_bytes([])), stem=member_stem)


@pytest.mark.parametrize("case", sorted(OTHER_STEMS))
def test_conda_cannot_install_such_a_file(tmp_path: Path, case: str) -> None:
    """Why: conda's own reader finds no info component in it."""
    path = tmp_path / f"{STEM}.conda"
    path.write_bytes(_conda(OTHER_STEMS[case]))
    with pytest.raises(LookupError):
        list(cps.stream_conda_component(str(path), None, cps.CondaComponent.info))


@pytest.mark.parametrize("case", sorted(OTHER_STEMS))
def test_a_conda_whose_members_are_named_for_another_file_is_refused(env, case: str) -> None:
    stem = OTHER_STEMS[case]
    error = refused(env, upload(env, f"{STEM}.conda", _conda(stem)), 400, f"info-{STEM}.tar.zst")
    assert error["member"] == f"info-{stem}.tar.zst"


def test_members_named_for_the_file_are_accepted(env) -> None:
    got = post(env.proxy, f"{STEM}.conda", _conda(STEM))
    try:
        assert got.status_code == 201, got.text
    finally:
        if got.status_code == 201:
            env.delete(f"linux-64/{STEM}.conda")
