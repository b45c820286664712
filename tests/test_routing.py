import pytest

from condaproxy.errors import BadRequest, NotFound
from condaproxy.routing import Kind, parse_path, split_token

CHANNELS = ["conda-forge", "bioconda", "org/private"]


def test_repodata_in_a_subdir():
    rp = parse_path("/conda-forge/linux-64/repodata.json.zst", CHANNELS)
    assert (rp.channel, rp.prefix, rp.subdir, rp.filename, rp.kind) == (
        "conda-forge",
        "",
        "linux-64",
        "repodata.json.zst",
        Kind.REPODATA,
    )
    assert rp.relative == "linux-64/repodata.json.zst"


def test_label_path_goes_to_the_same_path_upstream():
    rp = parse_path("/conda-forge/label/dev/noarch/repodata.json", CHANNELS)
    assert rp.prefix == "label/dev"
    assert rp.relative == "label/dev/noarch/repodata.json"
    assert rp.subdir_key == "conda-forge/label/dev/noarch"


def test_channel_names_may_contain_slashes():
    rp = parse_path("/org/private/osx-arm64/pkg-1.0-0.conda", CHANNELS)
    assert (rp.channel, rp.subdir, rp.kind) == ("org/private", "osx-arm64", Kind.PACKAGE)


@pytest.mark.parametrize(
    "path",
    [
        "/t/tk-123/conda-forge/noarch/repodata.json",
        "/conda-forge/t/tk-123/noarch/repodata.json",
    ],
)
def test_token_is_accepted_where_clients_put_it(path):
    rp = parse_path(path, CHANNELS)
    assert rp.token == "tk-123"
    assert rp.relative == "noarch/repodata.json"


def test_split_token_leaves_plain_paths_alone():
    assert split_token("/conda-forge/noarch/x") == ("conda-forge/noarch/x", None)


def test_shards_and_shard_index():
    digest = "ab" * 32
    shard = parse_path(f"/bioconda/linux-64/shards/{digest}.msgpack.zst", CHANNELS)
    assert shard.kind is Kind.SHARD
    assert shard.relative == f"linux-64/shards/{digest}.msgpack.zst"
    index = parse_path("/bioconda/linux-64/repodata_shards.msgpack.zst", CHANNELS)
    assert index.kind is Kind.SHARD_INDEX


def test_channel_root_files():
    rp = parse_path("/conda-forge/channeldata.json", CHANNELS)
    assert (rp.kind, rp.subdir, rp.relative) == (Kind.METADATA, None, "channeldata.json")


def test_unknown_channel_names_the_known_ones():
    with pytest.raises(NotFound) as info:
        parse_path("/nope/noarch/repodata.json", CHANNELS)
    assert info.value.extra["channels"] == sorted(CHANNELS)


@pytest.mark.parametrize(
    "path",
    [
        "/conda-forge/linux-64/index.html",
        "/conda-forge/linux-64/shards/not-a-hash.msgpack.zst",
        "/conda-forge",
        "/conda-forge/linux-64/pkg.conda",
    ],
)
def test_unserved_files_are_404(path):
    with pytest.raises(NotFound):
        parse_path(path, CHANNELS)


@pytest.mark.parametrize(
    "path",
    [
        "/conda-forge/../secret/noarch/repodata.json",
        "/conda-forge/linux-64/..\\x.conda",
        "/conda-forge//noarch/repodata.json",
    ],
)
def test_path_tricks_are_rejected(path):
    with pytest.raises(BadRequest):
        parse_path(path, CHANNELS)


def test_package_names_may_contain_dashes():
    rp = parse_path("/conda-forge/noarch/typing-extensions-4.12.2-pyha770c72_0.conda", CHANNELS)
    assert rp.kind is Kind.PACKAGE
