"""Dependency confusion through case and record names: an uploaded package name must hide every
upstream record of that name in every view a client reads, whatever case the upstream writes it
in, and whether it names it in the file name or only in the record's `name` field (clients
choose by that field and fold case: rattler's PackageName, conda's matching).

The hostile upstream (respx) publishes an impostor of a higher version next to an unrelated
package; the channel holds a real upload of the internal package. Checked in-process for
repodata.json, .zst, current_repodata.json, the shard index and every shard it names, and a
download of the impostor by URL; and end to end with py-rattler (test_shadowing_e2e.py).
"""

from __future__ import annotations

import bz2
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest
import respx
import zstandard
from starlette.testclient import TestClient

from condaproxy.rules.codecs import zstd_decompress
from condaproxy.rules.merge import _Members, merge_repodata, merged_repodata
from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.channel import Pkg
from tests.support.inproc import (
    Clock,
    built,
    decode_index,
    make_settings,
    record,
    shard,
    token,
)

UP = "https://up.example/team"
WRITE = "writer-token-1234"
SUBDIR = "linux-64"
LOCAL = {
    "ours": Pkg("ours", "1.0", "h0", SUBDIR),
    "my_pkg": Pkg("my_pkg", "1.0", "h0", SUBDIR),
    "a.b-c": Pkg("a.b-c", "1.0", "h0", SUBDIR),
}
OTHER = "other-1.0-0.conda"
ESCAPED = "\\u006furs"  # "ours", the `o` written as a JSON escape


@dataclass(frozen=True)
class Impostor:
    local: str  # the uploaded name
    filename: str  # the upstream file
    name: str  # its record's `name` field, as written in the JSON (maybe escaped)

    @property
    def id(self) -> str:
        return f"{self.local}:{self.filename}:{self.name}"

    @property
    def shard_key(self) -> str:
        """The upstream index names its shard after the record (what an indexer does) unless
        the file name says otherwise: a hostile index puts `zzz-...` under `zzz`."""
        return "zzz" if self.filename.startswith("zzz-") else self.name


IMPOSTORS = [
    # the file name in another case (the record says the same)
    Impostor("ours", "Ours-9.0-0.conda", "Ours"),
    Impostor("ours", "OURS-9.0-0.conda", "OURS"),
    Impostor("ours", "oUrS-9.0-0.conda", "oUrS"),
    Impostor("ours", "Ours-9.0-0.tar.bz2", "Ours"),
    # only the record's `name` field names it
    Impostor("ours", "zzz-9.0-0.conda", "ours"),
    Impostor("ours", "zzz-9.0-0.conda", "OURS"),
    Impostor("ours", "zzz-9.0-0.tar.bz2", "Ours"),
    Impostor("ours", "zzz-9.0-0.conda", ESCAPED),
    # only the file name names it
    Impostor("ours", "ours-9.0-0.conda", "zzz"),
    # names with `_`, `.` and `-`
    Impostor("my_pkg", "My_Pkg-9.0-0.conda", "My_Pkg"),
    Impostor("my_pkg", "zzz-9.0-0.conda", "MY_PKG"),
    Impostor("a.b-c", "A.B-C-9.0-0.conda", "A.B-C"),
    Impostor("a.b-c", "zzz-9.0-0.tar.bz2", "A.b-C"),
]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return built(tmp_path_factory.mktemp("packages"), *LOCAL.values())


def upstream_routes(router: respx.MockRouter, impostor: Impostor) -> bytes:
    """A hostile upstream: the impostor (version 9.0) and an unrelated package, in repodata,
    current_repodata and shards, and the impostor's file. Returns the impostor's bytes."""
    data = b"the attacker's package" * 20
    plain = impostor.name if impostor.name != ESCAPED else "ours"
    records = {
        impostor.filename: record(impostor.filename, data, name="__NAME__", version="9.0"),
        OTHER: record(OTHER, b"o" * 300),
    }
    document = msgspec.json.encode(
        {
            "info": {"subdir": SUBDIR},
            "packages": {fn: r for fn, r in records.items() if fn.endswith(".tar.bz2")},
            "packages.conda": {fn: r for fn, r in records.items() if fn.endswith(".conda")},
            "repodata_version": 1,
        }
    ).replace(b'"__NAME__"', f'"{impostor.name}"'.encode())
    router.get(f"{UP}/{SUBDIR}/repodata.json.zst").respond(
        200, content=zstandard.compress(document)
    )
    router.get(f"{UP}/{SUBDIR}/current_repodata.json").respond(200, content=document)
    records[impostor.filename]["name"] = plain
    shards = {
        impostor.shard_key: shard({impostor.filename: records[impostor.filename]}),
        "other": shard({OTHER: records[OTHER]}),
    }
    index = {
        "version": 1,
        "info": {"subdir": SUBDIR, "base_url": "./", "shards_base_url": "./shards/"},
        "shards": {name: hashlib.sha256(s).digest() for name, s in shards.items()},
    }
    router.get(f"{UP}/{SUBDIR}/repodata_shards.msgpack.zst").respond(
        200, content=zstandard.compress(msgpack.packb(index))
    )
    for s in shards.values():
        digest = hashlib.sha256(s).hexdigest()
        router.get(f"{UP}/{SUBDIR}/shards/{digest}.msgpack.zst").respond(200, content=s)
    router.get(f"{UP}/{SUBDIR}/{impostor.filename}").respond(200, content=data)
    router.get(f"{UP}/{SUBDIR}/{OTHER}").respond(200, content=b"o" * 300)
    for path in ("repodata.json.zst", "repodata_shards.msgpack.zst"):
        router.get(f"{UP}/noarch/{path}").respond(404)
    router.get(f"{UP}/noarch/repodata.json").respond(404)
    return data


def proxy(tmp_path: Path, allow: tuple[str, ...] = ()) -> TestClient:
    settings = make_settings(
        tmp_path / "cache",
        [ChannelSettings("team", UP, allow_upstream=allow)],
        [token("writer", WRITE, team="write")],
    )
    return TestClient(create_app(settings, clock=Clock()))


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        yield mocked


def upload(client: TestClient, data: bytes, filename: str) -> None:
    answer = client.post(
        f"/api/channels/team/upload/{filename}", content=data, headers={"x-api-key": WRITE}
    )
    assert answer.status_code == 201, answer.text


def repodata_views(client: TestClient) -> dict[str, dict[str, Any]]:
    """Every repodata document a client may read for the subdir, decoded."""
    views = {}
    for path in (
        "repodata.json",
        "repodata.json.zst",
        "repodata.json.bz2",
        "current_repodata.json",
    ):
        got = client.get(f"/team/{SUBDIR}/{path}")
        assert got.status_code == 200, got.text
        body = zstd_decompress(got.content) if path.endswith(".zst") else got.content
        body = bz2.decompress(body) if path.endswith(".bz2") else body
        views[path] = msgspec.json.decode(body)
    return views


def members(document: dict[str, Any]) -> dict[str, Any]:
    return {**document.get("packages", {}), **document.get("packages.conda", {})}


def served_shards(client: TestClient) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """The merged shard index ({name: sha256}) and the records of every shard it names that
    the proxy serves (a refused shard, 404, gives the client nothing)."""
    index = decode_index(client.get(f"/team/{SUBDIR}/repodata_shards.msgpack.zst").content)
    records: dict[str, dict[str, Any]] = {}
    for name, digest in index["shards"].items():
        got = client.get(f"/team/{SUBDIR}/shards/{digest.hex()}.msgpack.zst")
        if got.status_code == 404:
            assert "hidden" in got.json()["error"], got.text
            continue
        assert got.status_code == 200, got.text
        shard_doc = msgpack.unpackb(zstd_decompress(got.content))
        records[name] = {**shard_doc["packages"], **shard_doc["packages.conda"]}
    return index["shards"], records


@pytest.mark.parametrize("impostor", IMPOSTORS, ids=lambda i: i.id)
def test_an_upstream_impostor_in_another_case_or_record_name_is_hidden_in_every_view(
    tmp_path, router, packages, impostor
):
    upstream_routes(router, impostor)
    mine = LOCAL[impostor.local].filename
    with proxy(tmp_path) as client:
        upload(client, packages[mine], mine)

        for path, document in repodata_views(client).items():
            listed = members(document)
            assert impostor.filename not in listed, f"{path} shows the impostor"
            assert mine in listed and OTHER in listed, path

        index, shard_records = served_shards(client)
        same_name = [n for n in index if n.lower() == impostor.local]
        assert same_name == [impostor.local], "only the merged shard answers for the name"
        assert set(shard_records[impostor.local]) == {mine}
        for name, records in shard_records.items():
            assert impostor.filename not in records, f"shard {name} shows the impostor"
        assert OTHER in shard_records["other"]


@pytest.mark.parametrize(
    "impostor", [i for i in IMPOSTORS if not i.filename.startswith("zzz-")], ids=lambda i: i.id
)
def test_an_impostor_hidden_by_its_file_name_cannot_be_downloaded_through_the_channel(
    tmp_path, router, packages, impostor
):
    upstream_routes(router, impostor)
    mine = LOCAL[impostor.local].filename
    with proxy(tmp_path) as client:
        upload(client, packages[mine], mine)
        for method in ("GET", "HEAD"):
            got = client.request(method, f"/team/{SUBDIR}/{impostor.filename}")
            assert got.status_code == 404, (method, got.status_code)
        error = client.get(f"/team/{SUBDIR}/{impostor.filename}").json()
        assert error["status"] == 404 and "hidden" in error["error"]
        asked = [call.request.url.path for call in router.calls]
        assert not any(p.endswith(impostor.filename) for p in asked), "never fetched upstream"
        assert client.get(f"/team/{SUBDIR}/{OTHER}").status_code == 200


@pytest.mark.parametrize("allow", ["OURS", "Ours", "ours"])
@pytest.mark.parametrize(
    "impostor",
    [Impostor("ours", "Ours-9.0-0.conda", "Ours"), Impostor("ours", "ours-9.0-0.conda", "ours")],
    ids=lambda i: i.id,
)
def test_allow_upstream_in_another_case_shows_the_upstream_records_in_every_view(
    tmp_path, router, packages, impostor, allow
):
    data = upstream_routes(router, impostor)
    mine = LOCAL["ours"].filename
    with proxy(tmp_path, allow=(allow,)) as client:
        upload(client, packages[mine], mine)
        for path, document in repodata_views(client).items():
            assert {impostor.filename, mine} <= set(members(document)), path
        index, shard_records = served_shards(client)
        assert [n for n in index if n.lower() == "ours"] == ["ours"]
        assert set(shard_records["ours"]) == {mine, impostor.filename}
        assert client.get(f"/team/{SUBDIR}/{impostor.filename}").content == data


# The rule on raw documents: both merge paths (the byte splice, taken only when a search proves
# nothing is hidden, and the decoded one) must drop the impostor, however it is written.

MINE = {"ours-1.0-0.conda": {"name": "ours", "version": "1.0", "build": "0", "build_number": 0}}


@pytest.mark.parametrize(
    ("member", "local_name"),
    [
        ('"Ours-9.0-0.conda": {"name": "Ours"}', "ours"),
        ('"zzz-9.0-0.conda": {"name": "\\u006fURS"}', "ours"),
        ('"zzz-9.0-0.conda": {"version": "9.0", "name" :\n "OuRs" }', "ours"),
        ('"zzz-9.0-0.conda": {"name": "zzz", "name": "ours"}', "ours"),  # the last one counts
        ('"zzz-9.0-0.conda": {"name": "\u212aey"}', "key"),  # the Kelvin sign lowercases to k
        ('"zzz-9.0-0.conda": {"name": "\\u212Aey"}', "key"),
        ('"zzz-9.0-0.conda": {"name": "MY_PKG"}', "my_pkg"),
        ('"\\u004furs-9.0-0.conda": {"name": "zzz"}', "ours"),  # an escaped key
    ],
)
def test_an_impostor_written_any_way_is_dropped_from_the_merged_document(member, local_name):
    document = f'{{"packages.conda": {{{member}, "{OTHER}": {{"name": "other"}}}}}}'.encode()
    mine = {f"{local_name}-1.0-0.conda": {**MINE["ours-1.0-0.conda"], "name": local_name}}
    merged = msgspec.json.decode(merge_repodata(document, mine, "noarch", ()))
    assert set(merged["packages.conda"]) == {OTHER, *mine}


@pytest.mark.parametrize(
    "member",
    [
        '"ours-extra-1.0-0.conda": {"name": "ours-extra", "depends": ["ours >=1", "ours"]}',
        '"OURS-EXTRA-1.0-0.conda": {"name": "OURS-EXTRA", "constrains": ["OURS"]}',
        '"zzz-1.0-0.conda": {"name": "zzz", "license": "\\u00e9 ours"}',
    ],
)
def test_a_document_that_only_mentions_the_name_still_takes_the_byte_splice(member):
    """The fast path stays fast: names that merely start with the local name, or depend on
    it, are proven harmless by the search and the upstream map is not decoded."""
    document = f'{{"packages.conda": {{{member}}}}}'.encode()
    merged = merged_repodata(document, MINE, "noarch", ())
    assert not any(isinstance(p, _Members) for p in merged.parts), "decoded, not spliced"
    doc = msgspec.json.decode(b"".join(merged.pieces()))
    assert len(doc["packages.conda"]) == 2
