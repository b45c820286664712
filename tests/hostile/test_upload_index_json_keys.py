"""A hostile uploader writes info/index.json with a key twice in one object. Python's json (and so
the record the proxy serves) takes the last value; rattler refuses the file when it links the
package (`duplicate field`); other readers take the first. Accepted, the channel would list a
package that py-rattler cannot install, under a record other tools read differently (`"name":
"ours", ..., "name": "zzz"`). Refused like any invalid index.json: 400 naming the key, nothing
kept. Real proxy process (upload_env.py)."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest
from rattler.package import IndexJson

from tests.hostile.archives import STEM, conda, index_member, tar_bytes
from tests.hostile.upload_env import env, refused, upload

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module

_BASE = (
    '"version": "1.0", "build": "h0", "build_number": 0, "subdir": "linux-64", '
    '"license": "MIT", "timestamp": 1700000000000'
)
# key -> the rest of an index.json holding it twice (the last value is the valid one)
TWICE = {
    "name": '"name": "ours", "depends": [], "name": "hostile"',
    "depends": '"name": "hostile", "depends": ["evil >=1"], "depends": []',
    "noarch": '"name": "hostile", "depends": [], "noarch": "python", "noarch": "generic"',
    "subdir": '"name": "hostile", "depends": [], "subdir": "noarch"',  # _BASE has one
    "same-value": '"name": "hostile", "depends": [], "license": "MIT"',  # _BASE has one
    "nested": '"name": "hostile", "depends": [], "x_meta": {"a": 1, "a": 2}',
}
KEY = {"same-value": "license", "nested": "a"}


def _index(case: str) -> bytes:
    return ("{" + _BASE + ", " + TWICE[case] + "}").encode()


def _tar_bz2(index: bytes) -> bytes:
    return bz2.compress(tar_bytes([index_member(index)]))


@pytest.mark.parametrize("case", sorted(set(TWICE) - {"nested"}))
def test_rattler_refuses_such_an_index_json(tmp_path: Path, case: str) -> None:
    """Why: the client that installs the package cannot read what the proxy would accept (in a
    field rattler does not read, `nested`, readers still disagree on the value)."""
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "index.json").write_bytes(_index(case))
    with pytest.raises(Exception, match="duplicate field"):
        IndexJson.from_package_directory(tmp_path)


@pytest.mark.parametrize("ext", [".conda", ".tar.bz2"])
@pytest.mark.parametrize("case", sorted(TWICE))
def test_an_index_json_with_a_key_twice_is_refused(env, case: str, ext: str) -> None:
    index = _index(case)
    data = conda(index=index) if ext == ".conda" else _tar_bz2(index)
    key = KEY.get(case, case)
    error = refused(env, upload(env, f"{STEM}{ext}", data), 400, f"'{key}' twice")
    assert error["member"] == "info/index.json"
    assert error["field"] == key
