"""The cross-site rule alone: which browser requests may change what the proxy holds."""

from __future__ import annotations

import pytest

from condaproxy.rules.cross_site import CrossSiteRequest, check_same_site, cross_site_refusal

BASE = "https://cache.example"


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "cache.example:8080", "sec-fetch-site": "cross-site"},
        {"host": "cache.example:8080", "sec-fetch-site": "same-site"},
        {"host": "cache.example:8080", "origin": "https://evil.example"},
        {"host": "cache.example:8080", "origin": "http://cache.example:8081"},  # another port
        {"host": "cache.example:8080", "origin": "null"},
        {"host": "", "origin": "https://"},
    ],
)
def test_a_browsers_request_from_another_site_is_refused(headers):
    assert cross_site_refusal("POST", headers, BASE) is not None
    with pytest.raises(CrossSiteRequest) as refused:
        check_same_site("DELETE", headers, BASE)
    assert refused.value.status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "cache.example:8080"},  # not a browser
        {"host": "cache.example:8080", "sec-fetch-site": "same-origin"},
        {"host": "cache.example:8080", "sec-fetch-site": "none"},
        {"host": "cache.example:8080", "origin": "http://cache.example:8080"},
        {"host": "10.0.0.7:8080", "origin": "https://cache.example"},  # the external address
    ],
)
def test_clients_and_same_origin_browsers_pass(headers):
    assert cross_site_refusal("POST", headers, BASE) is None


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_are_never_refused(method):
    assert cross_site_refusal(method, {"sec-fetch-site": "cross-site"}, BASE) is None
