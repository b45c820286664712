"""The minimum pace an upstream body must keep (rules/pace.py)."""

from __future__ import annotations

from condaproxy.rules.pace import MIN_RATE, Pace


def test_a_trickle_inside_each_read_timeout_is_too_slow_after_one_window() -> None:
    pace = Pace(window=5, now=0)
    verdicts = [pace.too_slow(1, float(t)) for t in range(1, 7)]
    assert verdicts == [False, False, False, False, True, True]


def test_a_body_at_the_minimum_rate_or_faster_keeps_going_window_after_window() -> None:
    pace = Pace(window=5, now=0)
    assert not any(pace.too_slow(MIN_RATE, float(t)) for t in range(1, 100))


def test_a_burst_then_silence_is_judged_per_window() -> None:
    pace = Pace(window=5, now=0)
    assert not pace.too_slow(10 * MIN_RATE * 5, 5.0)  # a good first window
    assert not pace.too_slow(1, 9.0)
    assert pace.too_slow(1, 10.0)  # the second window has two bytes


def test_a_small_body_in_one_piece_is_never_too_slow() -> None:
    assert not Pace(window=60, now=0).too_slow(200, 59.0)
