"""The message of the 400 for a request the HTTP parser refused (rules/malformed.py)."""

from __future__ import annotations

import pytest

from condaproxy.rules.malformed import CALLBACK_FAILED, malformed_request


def test_the_parsers_reason_is_named():
    assert malformed_request("Invalid header value char") == (
        "malformed HTTP/1.1 request: Invalid header value char"
    )


@pytest.mark.parametrize("reason", [None, "", "   ", "\x00\x01"])
def test_no_reason_is_a_plain_phrase(reason):
    message = malformed_request(reason)
    assert message.startswith("malformed HTTP/1.1 request: ")
    assert message.isprintable() and message.isascii()


def test_a_failed_callback_says_nothing_of_its_exception():
    assert malformed_request("secret-token in /t/x", from_callback=True).endswith(CALLBACK_FAILED)


def test_the_message_is_short_printable_ascii():
    message = malformed_request("é\x00" + "x" * 5000)
    assert message.isascii() and message.isprintable() and len(message) < 160
