"""Pure rules: client address, external URL and request id behind reverse proxies."""

from condaproxy.forwarded import client_address, external_base, networks, request_id

TRUSTED = networks(["127.0.0.1", "10.0.0.0/8"])


def test_forwarded_for_is_believed_only_from_a_trusted_proxy():
    headers = {"x-forwarded-for": "198.51.100.7, 203.0.113.9, 10.1.2.3"}
    assert client_address("127.0.0.1", headers, TRUSTED) == "203.0.113.9"
    assert client_address("192.0.2.50", headers, TRUSTED) == "192.0.2.50"  # not a proxy of ours
    assert client_address("127.0.0.1", headers, ()) == "127.0.0.1"
    assert client_address("127.0.0.1", {}, TRUSTED) == "127.0.0.1"
    assert client_address(None, headers, TRUSTED) == "-"


def test_external_url_prefers_configuration_then_trusted_forwarded_headers():
    forwarded = {
        "host": "10.0.0.5:8080",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "cache.corp",
    }
    assert external_base("127.0.0.1", forwarded, TRUSTED, "", "http") == "https://cache.corp"
    assert external_base("192.0.2.1", forwarded, TRUSTED, "", "http") == "http://10.0.0.5:8080"
    assert external_base("127.0.0.1", forwarded, TRUSTED, "https://x.example/", "http") == (
        "https://x.example"
    )
    hostile = {"host": "evil.example/<script>"}
    assert external_base("192.0.2.1", hostile, TRUSTED, "", "http") == "http://localhost"


def test_request_ids_are_taken_only_when_sane():
    assert request_id("abc-123", "ours") == "abc-123"
    assert request_id("bad id\n", "ours") == "ours"
    assert request_id("x" * 65, "ours") == "ours"
    assert request_id(None, "ours") == "ours"
