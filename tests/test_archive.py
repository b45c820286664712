import pytest

from condaproxy.archive import InvalidPackage, check_filename, check_index, check_member_name

INDEX = {
    "name": "tool",
    "version": "1.0",
    "build": "h0_0",
    "build_number": 0,
    "subdir": "linux-64",
    "depends": ["python >=3.10"],
}


def test_good_names_and_index():
    assert check_filename("my-tool-1.0-h0_0.conda") == ("my-tool", "1.0", "h0_0", "conda")
    assert check_index(INDEX, "tool-1.0-h0_0.tar.bz2") == "linux-64"


@pytest.mark.parametrize(
    "name",
    [
        "../tool-1.0-0.conda",
        "a/tool-1.0-0.conda",
        "a\\tool-1.0-0.conda",
        "tool-1.0-0.conda\x00",
        "/abs-1.0-0.conda",
        ".hidden-1.0-0.conda",
        "tool.conda",
        "tool-1.0.zip",
        "",
    ],
)
def test_bad_file_names(name):
    with pytest.raises(InvalidPackage):
        check_filename(name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "other"}, "does not match info/index.json"),
        ({"subdir": "../etc"}, "contains a path"),
        ({"subdir": "nonsense"}, "is not a conda subdir"),
        ({"name": None}, "no valid 'name'"),
        ({"build_number": "0"}, "integer 'build_number'"),
        ({"depends": "python"}, "'depends' must be a list"),
    ],
)
def test_bad_index_json(change, message):
    with pytest.raises(InvalidPackage, match=message):
        check_index({**INDEX, **change}, "tool-1.0-h0_0.conda")


def test_index_json_must_be_an_object():
    with pytest.raises(InvalidPackage, match="not a JSON object"):
        check_index(["x"], "tool-1.0-h0_0.conda")


@pytest.mark.parametrize("member", ["/etc/passwd", "../../x", "info/../../x"])
def test_archive_members_cannot_escape(member):
    with pytest.raises(InvalidPackage):
        check_member_name(member)
