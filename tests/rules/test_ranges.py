import pytest

from condaproxy.rules.errors import RangeNotSatisfiable
from condaproxy.rules.ranges import parse_range


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, 1000)),
        ("bytes=-100", (900, 1000)),  # suffix range (rattler's sparse reader)
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 1000)),  # end clipped to the size
    ],
)
def test_single_ranges(header, span):
    assert parse_range(header, 1000) == span


@pytest.mark.parametrize(
    "header", [None, "", "items=0-1", "bytes=0-1,5-6", "bytes=abc", "bytes=5-2", "bytes=-"]
)
def test_ignored_ranges_send_the_whole_file(header):
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0"])
def test_unsatisfiable_ranges(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)
