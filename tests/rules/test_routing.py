import pytest

from condaproxy.rules.errors import BadRequest, NotFound, URITooLong
from condaproxy.rules.paths import (
    RESERVED_SEGMENTS,
    is_own_route,
    split_raw_path,
    split_token,
    valid_channel_name,
)
from condaproxy.rules.routing import (
    PACKAGE_RE,
    SUBDIR_RE,
    Kind,
    UnknownChannel,
    parse_path,
    parse_raw_path,
    unknown_channel,
)
from condaproxy.settings import ChannelSettings, Secret, TokenSettings

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
    assert split_token(["conda-forge", "noarch", "x"]) == (None, ["conda-forge", "noarch", "x"])


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


def test_unknown_channel_is_a_404():
    # The listing is built per caller by unknown_channel (test_unknown_channel_lists_...).
    with pytest.raises(UnknownChannel) as info:
        parse_path("/nope/noarch/repodata.json", CHANNELS)
    assert info.value.status == 404 and "nope" in info.value.message


@pytest.mark.parametrize(
    "path",
    [
        "/conda-forge/linux-64/index.html",
        "/conda-forge/linux-64/shards/not-a-hash.msgpack.zst",
        "/conda-forge",
        "/conda-forge/linux-64/pkg.conda",
        # Between the channel and the subdir only label/<label> may appear.
        "/conda-forge/secret/noarch/repodata.json",
        "/conda-forge/label/dev/extra/noarch/repodata.json",
        "/conda-forge/label/-dev/noarch/repodata.json",
        "/conda-forge/labels/dev/noarch/repodata.json",
        "/conda-forge/x/channeldata.json",
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


@pytest.mark.parametrize(
    "filename", ["typing-extensions-4.12.2-pyha770c72_0.conda", "pkg-1!2.0+local_1-py_0.tar.bz2"]
)
def test_package_names_may_contain_dashes_epochs_and_local_versions(filename):
    rp = parse_path(f"/conda-forge/noarch/{filename}", CHANNELS)
    assert rp.kind is Kind.PACKAGE


# Every encoding of a dot segment or a separator: single, double, triple and mixed.
DOTDOT = ["%2e%2e", "%2E%2e", ".%2e", "%2e.", "%252e%252e", "%2e%252e", "%25252e%25252e"]
DOTS = [*DOTDOT, "%2e", "%252e"]
SEPARATED = ["..%2f..", "%2e%2e%2f", "..%5c..", "%252e%252e%252f", "..%255c", "a%2fb", "a%5Cb"]
ATTACK_SEGMENTS = [*DOTS, *SEPARATED, "%00", "a%00b", "a%0ab", "%7f", "a%20b", "%c3%a9", "a%3fb"]
ATTACK_SEGMENTS += ["a%23b", "%25", "%%", "%zz", "%2", "a%"]
PLACES = [
    "/conda-forge/{x}/noarch/repodata.json",
    "/conda-forge/label/{x}/noarch/repodata.json",
    "/conda-forge/{x}/{x}/secret/noarch/repodata.json",
    "/conda-forge/linux-64/{x}",
    "/conda-forge/linux-64/shards/{x}",
    "/t/tk-123/conda-forge/{x}/noarch/repodata.json",
    "/conda-forge/t/tk-123/{x}/noarch/repodata.json",
    "/{x}/conda-forge/noarch/repodata.json",
    "/api/channels/conda-forge/upload/{x}",
    "/api/cache/conda-forge/{x}/prefetch",
]
CASES = [(p, x) for p in PLACES for x in ATTACK_SEGMENTS]
# Inside a longer segment, dots are plain characters; everything else is still refused.
CASES += [("/conda-forge/linux-64/pkg-1.0-{x}.conda", x) for x in ATTACK_SEGMENTS if x not in DOTS]


@pytest.mark.parametrize(("place", "segment"), CASES)
def test_encoded_path_steps_and_forbidden_characters_are_refused_in_every_segment(place, segment):
    raw = place.format(x=segment).encode()
    with pytest.raises(BadRequest) as info:
        split_raw_path(raw)
    assert "path segment" in info.value.message
    with pytest.raises(BadRequest):
        parse_raw_path(raw, CHANNELS)


def test_an_encoded_slash_is_never_a_separator():
    with pytest.raises(BadRequest, match="encoded path separator"):
        split_raw_path(b"/conda-forge/noarch%2Frepodata.json")


def test_segments_are_decoded_exactly_once():
    assert split_raw_path(b"/conda-forge/linux-64/pkg-1.0-0%2Bx.conda") == [
        "conda-forge",
        "linux-64",
        "pkg-1.0-0+x.conda",
    ]
    with pytest.raises(BadRequest, match="more than once"):
        split_raw_path(b"/conda-forge/linux-64/pkg-1.0-0%252Bx.conda")


@pytest.mark.parametrize("token", ["sekr%252e%252e", "sekr%00t", "sekr%2Ft", "sekr!t", "sekr%3Ft"])
@pytest.mark.parametrize("where", ["/t/{t}/conda-forge/noarch/x", "/conda-forge/t/{t}/noarch/x"])
def test_a_malformed_path_token_is_refused_without_echoing_it(token, where):
    with pytest.raises(BadRequest) as info:
        parse_raw_path(where.format(t=token).encode(), CHANNELS)
    assert "sekr" not in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        b"/conda-forge/linux-64/" + b"a" * 250 + b"-1-0.conda",
        b"/conda-forge/linux-64/" + b"%61" * 256,
        b"/conda-forge/" + b"/".join([b"label"] * 200) + b"/noarch/repodata.json",
        b"/t/" + b"k" * 300 + b"/conda-forge/noarch/repodata.json",
    ],
)
def test_over_long_paths_and_segments_are_414(raw):
    with pytest.raises(URITooLong) as info:
        split_raw_path(raw)
    assert info.value.status == 414 and b"k" * 20 not in info.value.message.encode()


@pytest.mark.parametrize(
    "filename",
    [
        "pkg-1.0%-0.conda",
        "pkg-1.0-0\\x.conda",
        "pkg-1.0\x00-0.conda",
        "pkg-1.0-0\x1f.conda",
        "pkg-1.0-0.conda\n",
        "pkg-1.0-0 .conda",
        "pkg-1.0-b!1.conda",
        "pkg-1.0-é.conda",
    ],
)
def test_package_grammar_refuses_characters_no_conda_file_name_has(filename):
    assert PACKAGE_RE.match(filename) is None


@pytest.mark.parametrize("subdir", ["linux-64\n", "noarch\n", "Linux-64", "linux-64/x"])
def test_subdir_grammar_is_anchored_at_the_very_end(subdir):
    assert SUBDIR_RE.match(subdir) is None


@pytest.mark.parametrize(
    ("segments", "own"),
    [
        ([], True),
        (["healthz"], True),
        (["api", "channels", "x", "packages"], True),
        (["metrics"], True),
        (["openapi.json"], True),
        (["static", "app.css"], True),
        (["healthz-mirror", "noarch", "repodata.json"], False),
        (["metricsfoo", "noarch", "repodata.json"], False),
        (["apis", "noarch", "repodata.json"], False),
        (["readyz2", "noarch", "repodata.json"], False),
    ],
)
def test_own_routes_are_matched_by_whole_first_segment(segments, own):
    assert is_own_route(segments) is own


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("conda-forge", True),
        ("org/private", True),
        ("healthz-mirror", True),
        ("conda-forge/label/dev", True),
        *[(reserved, False) for reserved in sorted(RESERVED_SEGMENTS)],
        *[(f"{reserved}/x", False) for reserved in sorted(RESERVED_SEGMENTS)],
        ("org/t/x", False),
        ("", False),
        ("a//b", False),
        ("a/../b", False),
        ("a%2e", False),
        ("a b", False),
        ("-dash", False),
        ("x" * 256, False),
    ],
)
def test_channel_names_that_routing_cannot_reach_are_invalid(name, valid):
    assert valid_channel_name(name) is valid


def test_unknown_channel_lists_only_channels_the_caller_may_read():
    channels = {
        "pub": ChannelSettings("pub", "https://up.example/pub"),
        "secret": ChannelSettings("secret", "https://up.example/secret", private=True),
        "other": ChannelSettings("other", None, private=True),
    }
    reader = TokenSettings("reader", Secret("reader-token"), {"secret": "read"})
    admin = TokenSettings("admin", Secret("admin-token"), {"*": "admin"})
    assert unknown_channel("x", channels, None).extra["channels"] == ["pub"]
    assert unknown_channel("x", channels, reader).extra["channels"] == ["pub", "secret"]
    assert unknown_channel("x", channels, admin).extra["channels"] == ["other", "pub", "secret"]
