from condaproxy.rules.conditional import (
    http_date,
    if_none_match_hits,
    if_range_allows,
    is_fresh,
    not_modified,
    remaining_max_age,
)

T0 = 1_700_000_000.0


def test_freshness_follows_the_ttl():
    assert is_fresh(T0, 60, T0 + 59.9)
    assert not is_fresh(T0, 60, T0 + 60)
    assert not is_fresh(T0, 0, T0), "ttl 0 revalidates on every request"
    assert not is_fresh(T0, 60, T0 - 5), "a clock that went backwards is not fresh"


def test_remaining_max_age_counts_down_and_stops_at_zero():
    assert remaining_max_age(T0, 60, T0 + 20) == 40
    assert remaining_max_age(T0, 60, T0 + 90) == 0


def test_if_none_match_lists_star_and_weak_tags():
    assert if_none_match_hits('"a", "b"', '"b"')
    assert if_none_match_hits("*", '"x"')
    assert if_none_match_hits('W/"b"', '"b"')
    assert not if_none_match_hits('"a"', '"b"')


def test_if_none_match_wins_over_if_modified_since():
    # RFC 9110 §13.2.2: a mismatching ETag means 200 even if the date says not modified.
    assert not not_modified('"old"', http_date(T0 + 100), '"new"', T0)
    assert not_modified(None, http_date(T0 + 100), '"new"', T0)
    assert not not_modified(None, http_date(T0 - 100), '"new"', T0)
    assert not not_modified(None, "garbage", '"new"', T0)


def test_if_range_needs_a_strong_exact_match():
    assert if_range_allows(None, '"e"', T0)
    assert if_range_allows('"e"', '"e"', T0)
    assert not if_range_allows('"other"', '"e"', T0)
    assert not if_range_allows('W/"e"', '"e"', T0)
    assert if_range_allows(http_date(T0), '"e"', T0)
    assert not if_range_allows(http_date(T0 + 1), '"e"', T0)
