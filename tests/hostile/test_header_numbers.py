"""Numbers in what a client (or an upstream) sends, against a real proxy: a `Range`, a page
number, a `Retry-After` written with characters Python calls digits but `int()` refuses
(`²`, `³`, `¹`: latin-1 bytes a header may carry), or with more digits than `int()` converts
(over 4300), is a malformed field: ignored, or a 4xx/502 naming it, never a 500.

Every route that reads one: a stored repodata document, a package streamed on a miss, the
same package once cached, the browse pages' `?page=`, and an upstream's `Retry-After`.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from tests.support.hostile import listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PACKAGE = b"P" * 4096
FILES = {f"linux-64/pkg{i}-1.0-0.conda": PACKAGE + bytes([i]) for i in range(40)}
UNCACHED = iter(sorted(FILES))  # each miss case takes a package nobody asked for yet

# Range headers whose numbers are not ASCII digits, or too many of them; each as raw bytes.
HUGE = b"9" * 5000
BAD_RANGES = [
    b"bytes=\xb2-",
    b"bytes=0-\xb3",
    b"bytes=-\xb9",
    b"bytes=\xb9\xb2-\xb3",
    b"bytes=0-" + HUGE,
    b"bytes=" + HUGE + b"-",
    b"bytes=-" + HUGE,
    b"bytes=" + b"0" * 5000 + b"1-2",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Upstream]]:
    base = tmp_path_factory.mktemp("header-numbers")
    upstream = Upstream(listed_channel(base / "channel", FILES)).start()
    config = write_config(base / "proxy.toml", base / "cache", {"pub": {"upstream": upstream.url}})
    proxy = Proxy(config).start()
    yield proxy, upstream
    proxy.stop()
    upstream.stop()


def send(proxy: Proxy, path: str, headers: dict[str, bytes]) -> tuple[int, bytes, dict[str, str]]:
    """One GET with header values sent byte for byte."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def whole_or_error(status: int, body: bytes, size: int) -> None:
    """A Range the proxy cannot read is ignored (the whole body) or unsatisfiable (416)."""
    assert status in (200, 206, 416), (status, body[:200])
    if status == 200:
        assert len(body) == size


@pytest.mark.parametrize("bad", BAD_RANGES, ids=lambda b: repr(b[:16]))
@pytest.mark.parametrize("target", ["repodata", "package-miss", "package-hit"])
def test_a_range_with_unreadable_numbers_is_ignored_not_a_500(
    served: tuple[Proxy, Upstream], bad: bytes, target: str
) -> None:
    proxy, _ = served
    before = len(proxy.log())
    if target == "repodata":
        path = "/pub/linux-64/repodata.json"
        status, plain, _ = send(proxy, path, {"Accept-Encoding": b"identity"})
        assert status == 200
        size, headers = len(plain), {"Accept-Encoding": b"identity"}
    else:
        name = next(UNCACHED)
        path, size, headers = f"/pub/{name}", len(FILES[name]), {}
        if target == "package-hit":
            assert send(proxy, path, {})[0] == 200
    status, body, _ = send(proxy, path, {**headers, "Range": bad})
    whole_or_error(status, body, size)
    if status == 200 and target != "repodata":
        assert body == FILES[path.removeprefix("/pub/")]
    no_crash_in_log(proxy.log()[before:])


@pytest.mark.parametrize(
    "page",
    ["%C2%B2", "%C2%B9", "%D9%A3", "%EF%BC%93", HUGE.decode(), "1" + "0" * 30],
    ids=["sup2", "sup1", "arabic3", "fullwidth3", "5000-digits", "31-digits"],
)
def test_a_page_number_that_is_not_ascii_digits_is_a_400(
    served: tuple[Proxy, Upstream], page: str
) -> None:
    proxy, _ = served
    before = len(proxy.log())
    status, body, headers = send(proxy, f"/pub/linux-64/?page={page}", {})
    assert status == 400, (status, body[:200])
    assert headers["content-type"].startswith("application/json")
    assert "page" in json.loads(body)["error"]
    no_crash_in_log(proxy.log()[before:])


@pytest.mark.parametrize(
    ("retry_after", "passed_on"),
    [("\u00b2", None), ("\u00b9\u00b3", None), ("\u0663", None), ("9" * 4400, "3600")],
    ids=["sup2", "sup13", "arabic3", "4400-digits"],
)
def test_an_upstream_retry_after_that_is_no_number_is_a_502(
    served: tuple[Proxy, Upstream], retry_after: str, passed_on: str | None
) -> None:
    proxy, upstream = served
    before = len(proxy.log())
    name = next(UNCACHED)
    upstream.override(f"/{name}", b"busy", status=503, headers={"Retry-After": retry_after})
    try:
        status, body, headers = send(proxy, f"/pub/{name}", {})
    finally:
        upstream.reset()
    assert status == 502, (status, body[:200])
    assert upstream.url in json.loads(body)["error"] or "upstream" in json.loads(body)
    assert headers.get("retry-after") == passed_on  # unreadable: dropped; huge: capped
    no_crash_in_log(proxy.log()[before:])


def test_well_formed_numbers_still_work(served: tuple[Proxy, Upstream]) -> None:
    proxy, _ = served
    name = sorted(FILES)[-1]
    status, body, headers = send(proxy, f"/pub/{name}", {"Range": b"bytes=0010-0019"})
    assert (status, body) == (206, FILES[name][10:20])
    assert headers["content-range"] == f"bytes 10-19/{len(FILES[name])}"
    status, body, _ = send(proxy, f"/pub/{name}", {"Range": b"bytes=-" + b"9" * 40})
    assert (status, body) == (206, FILES[name])
    status, _, _ = send(proxy, f"/pub/{name}", {"Range": b"bytes=" + b"9" * 40 + b"-"})
    assert status == 416
    assert send(proxy, "/pub/linux-64/?page=1", {})[0] == 200
