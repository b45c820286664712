"""An upstream's ETag and Last-Modified are kept and sent back only when they are validators:
anything else (a control character, an unquoted tag, no date) is dropped, never sent."""

from __future__ import annotations

import pytest

from condaproxy.rules.conditional import usable_date, usable_etag


@pytest.mark.parametrize("value", ['"v1"', 'W/"v1"', '""', '"a-b_c.d"', '"\xe9"', ' "v1" '])
def test_an_entity_tag_is_kept(value: str) -> None:
    assert usable_etag(value) == value.strip()


@pytest.mark.parametrize(
    "value",
    [
        None,
        "v1",
        '"a\x01b"',
        '"a\x7fb"',
        '"a\tb"',
        '"a"b"',
        'W/"\x1b"',
        'w/"v"',
        '"\u20ac"',
        '"' + "x" * 2000 + '"',
        '"v1"\r\nX-Evil: 1',
    ],
)
def test_anything_else_is_dropped(value: str | None) -> None:
    assert usable_etag(value) is None


def test_a_date_is_kept_only_when_it_is_one() -> None:
    date = "Mon, 02 Jun 2025 10:00:00 GMT"
    assert usable_date(date) == date
    for value in (None, "tomorrow", date + "\x01", date.replace(" ", "\x00", 1), "x" * 2000):
        assert usable_date(value) is None
