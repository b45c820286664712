"""The Cache-Control a channel file goes out with: private channels' files are `private`, with
their freshness (max-age, immutable) kept; public channels' untouched."""

from __future__ import annotations

import pytest

from condaproxy.rules.conditional import for_audience


@pytest.mark.parametrize(
    ("sent", "private"),
    [
        ("public, max-age=60", "private, max-age=60"),
        ("public, max-age=31536000, immutable", "private, max-age=31536000, immutable"),
        ("max-age=0", "private, max-age=0"),
        ("PUBLIC,max-age=5", "private, max-age=5"),
        ("private, max-age=5", "private, max-age=5"),
    ],
)
def test_a_private_channels_file_is_private_with_its_freshness_kept(sent, private):
    assert for_audience(sent, private=True) == private
    assert for_audience(sent, private=False) == sent
