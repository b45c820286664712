"""The pure origin rules: which origin a URL reaches, what an address really reaches, who gets
credentials, and when metadata may send the proxy to a foreign origin."""

from __future__ import annotations

import ipaddress

import pytest

from condaproxy.rules.origins import (
    Origin,
    address_class,
    carries_credentials,
    origin_of,
    refusal,
    trusted,
)

UPSTREAM = origin_of("https://up.example/t/tk/org")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        # cloud metadata endpoints, in every spelling an address can take
        ("169.254.169.254", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:a9fe:a9fe", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 (RFC 6052)
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 (RFC 3056)
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd00:ec2::254", "private"),  # AWS's IPv6 metadata endpoint, in the ULA range
        # loopback
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        (2130706433, "loopback"),  # what `http://2130706433/` resolves to
        (ipaddress.IPv4Address(0x7F000001), "loopback"),
        # private networks: RFC 1918, carrier-grade NAT (RFC 6598), ULA (RFC 4193)
        ("10.0.0.5", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("100.127.255.254", "private"),
        ("::ffff:10.1.2.3", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "private"),  # deprecated site-local
        # addresses that must never be fetched, whatever the upstream is
        ("0.0.0.0", "forbidden"),  # reaches the local host on Linux
        ("0.1.2.3", "forbidden"),
        ("::", "forbidden"),
        ("::ffff:0.0.0.0", "forbidden"),
        ("224.0.0.1", "forbidden"),
        ("ff02::1", "forbidden"),
        ("240.0.0.1", "forbidden"),
        ("255.255.255.255", "forbidden"),
        ("::127.0.0.1", "forbidden"),  # deprecated IPv4-compatible form
        ("not-an-address", "forbidden"),
        ("2130706433", "forbidden"),  # a spelling, not a resolved address: fail closed
        # public
        ("93.184.216.34", "public"),
        ("8.8.8.8", "public"),
        ("100.128.0.1", "public"),
        ("::ffff:8.8.8.8", "public"),
        ("2606:4700::6810:84e5", "public"),
    ],
)
def test_addresses_are_classified_by_what_they_reach(address, kind):
    assert address_class(address) == kind


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://up.example/a", ("https", "up.example", 443)),
        ("https://UP.Example:443/a", ("https", "up.example", 443)),
        ("https://up.example./a", ("https", "up.example", 443)),
        ("http://up.example/a", ("http", "up.example", 80)),
        ("http://up.example:80/a", ("http", "up.example", 80)),
        ("https://user:secret@up.example/a", ("https", "up.example", 443)),
        ("http://[::FFFF:127.0.0.1]:8080/", ("http", "::ffff:7f00:1", 8080)),
        ("http://[0:0::1]/", ("http", "::1", 80)),
        ("https://Bücher.example/", ("https", "xn--bcher-kva.example", 443)),
        # the host httpx itself would connect to, whatever urllib thinks
        ("http://evil.example\\@up.example/", ("http", "up.example", 80)),
    ],
)
def test_origin_is_scheme_host_and_port_normalised(url, origin):
    assert origin_of(url) == Origin(*origin)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://up.example/", "gopher://x/", "/rel"])
def test_non_http_urls_have_no_origin(url):
    with pytest.raises(ValueError):
        origin_of(url)


def test_origin_prints_as_scheme_host_port():
    assert str(origin_of("http://[::1]/x")) == "http://[::1]:80"
    assert str(origin_of("https://up.example/t/secret/x")) == "https://up.example:443"


@pytest.mark.parametrize(
    ("url", "carries"),
    [
        ("https://up.example/other/path", True),
        ("https://UP.EXAMPLE:443/x", True),
        ("http://up.example/x", False),  # a downgrade is another origin
        ("https://up.example:8443/x", False),
        ("https://cdn.up.example/x", False),
        ("https://up.example.evil/x", False),
        ("https://evil.example/up.example/x", False),
    ],
)
def test_credentials_go_only_to_the_upstreams_exact_origin(url, carries):
    assert carries_credentials(origin_of(url), UPSTREAM) is carries


def test_allowed_origins_are_trusted_by_exact_origin():
    allowed = ["http://169.254.169.254", "https://mirror.example:8443", "not a url"]
    assert trusted(UPSTREAM, UPSTREAM, [])
    assert trusted(origin_of("http://169.254.169.254:80/latest"), UPSTREAM, allowed)
    assert trusted(origin_of("https://MIRROR.example:8443/x"), UPSTREAM, allowed)
    assert not trusted(origin_of("https://mirror.example/x"), UPSTREAM, allowed)
    assert not trusted(origin_of("https://169.254.169.254/"), UPSTREAM, allowed)


PUBLIC = ["93.184.216.34"]


@pytest.mark.parametrize(
    "target",
    [
        ["169.254.169.254"],
        ["::ffff:169.254.169.254"],
        ["10.0.0.7"],
        ["100.64.3.4"],
        ["fd00::1"],
        ["127.0.0.1"],
        ["0.0.0.0"],
        ["93.184.216.35", "10.0.0.1"],  # a name with one bad address among good ones
        ["10.0.0.1", "93.184.216.35"],
    ],
)
def test_public_upstream_cannot_send_the_proxy_inward(target):
    why = refusal(PUBLIC, target)
    assert why is not None
    assert next(a for a in target if address_class(a) != "public") in why


def test_same_class_is_allowed_and_forbidden_never_is():
    assert refusal(PUBLIC, ["151.101.1.1", "2a04:4e42::1"]) is None
    assert refusal(["127.0.0.1"], ["127.0.0.1", "::1"]) is None  # the split-host tests
    assert refusal(["10.0.0.2"], ["10.9.9.9", "fd00::5"]) is None
    assert refusal(["0.0.0.0"], ["0.0.0.0"]) is not None
    assert refusal(["127.0.0.1"], ["0.0.0.0"]) is not None
    assert refusal(["10.0.0.2"], ["169.254.169.254"]) is not None


def test_unknown_upstream_address_refuses_and_unresolvable_target_reaches_nothing():
    assert "unknown" in (refusal([], ["93.184.216.34"]) or "")
    # Nothing to connect to: allowed by the rule; the connection is pinned to no address.
    assert refusal(PUBLIC, []) is None
