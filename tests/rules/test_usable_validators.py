"""An upstream's ETag and Last-Modified are kept and sent back only when they are validators:
anything else (a control character, a space or quote in a bare tag, no date) is dropped, never
sent. A bare tag of visible ASCII (`ETag: v1`, as sloppy servers send) is kept: such an upstream
still answers the next revalidation with a 304."""

from __future__ import annotations

import pytest

from condaproxy.rules.conditional import usable_date, usable_etag


@pytest.mark.parametrize(
    "value", ['"v1"', 'W/"v1"', '""', '"a-b_c.d"', '"\xe9"', ' "v1" ', "v1", "5f3a-1c9e"]
)
def test_an_entity_tag_is_kept(value: str) -> None:
    assert usable_etag(value) == value.strip()


@pytest.mark.parametrize(
    "value",
    [
        None,
        "a b",
        'a"b',
        "\xe9",
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
