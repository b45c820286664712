"""Pure rules: which coding of repodata.json a client gets."""

import pytest

from condaproxy.rules.encoding import accepted, choose

BOTH = {"zstd", "gzip"}


@pytest.mark.parametrize(
    ("header", "available", "chosen"),
    [
        ("gzip, deflate, br, zstd", BOTH, "zstd"),
        ("gzip, deflate", BOTH, "gzip"),
        ("gzip;q=0, zstd;q=0", BOTH, None),
        ("zstd", {"gzip"}, None),
        ("gzip", {"zstd"}, None),
        ("*", BOTH, "zstd"),
        ("*;q=0.5, zstd;q=0", BOTH, "gzip"),
        ("identity", BOTH, None),
        (None, BOTH, None),
        ("", BOTH, None),
        ("gzip;q=bogus, zstd", BOTH, "zstd"),
    ],
)
def test_the_cheapest_coding_the_client_accepts(header, available, chosen):
    assert choose(header, available) == chosen


@pytest.mark.parametrize(
    ("header", "available", "chosen"),
    [
        ("gzip;q=0.5, zstd;q=0.1", BOTH, "gzip"),  # the client's ranking wins over our cost
        ("zstd;q=0.2, *;q=0.9", BOTH, "gzip"),  # gzip is named only through `*`
        ("gzip;q=0.5, zstd;q=0.5", BOTH, "zstd"),  # a tie: the cheaper for us
        ("gzip;q=0.3, identity", BOTH, None),  # identity ranked above every coding
        ("gzip, identity;q=0.5", BOTH, "gzip"),
        ("gzip;q=0.9, zstd;q=0.1", {"zstd"}, "zstd"),  # the best of what exists
    ],
)
def test_the_coding_the_client_ranks_highest(header, available, chosen):
    assert choose(header, available) == chosen


def test_q_values_are_read():
    assert accepted("gzip;q=0.8, br") == {"gzip": 0.8, "br": 1.0}
