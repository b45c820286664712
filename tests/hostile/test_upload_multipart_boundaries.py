"""An uploader's multipart boundary, against a real proxy: python-multipart refuses one past
256 bytes with an exception that is none of its parse errors, which reached the uploader as
a 500 "internal error" and an error event with a traceback. RFC 2046 allows 1 to 70
characters of a small set; anything else is the 400 of a body that is no multipart
form-data, one `upload refused` warning, and nothing is kept. Boundaries real clients send
(curl, requests, httpx, browsers, Go) still upload."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.processes import Proxy, write_config

pytestmark = pytest.mark.integration

WRITER = "writer-token-8642"
TOOL = Pkg("mytool", "1.0", "h0", "linux-64")
FILES = "/api/channels/team/files"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("boundaries-package")
    return build_package(TOOL, work / "src", work / "out").read_bytes()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("boundaries")
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"team": {}},
        tokens={"ci": {"token": WRITER, "roles": {"team": "write"}}},
    )
    started = Proxy(config).start()
    yield started
    started.stop()


def form(boundary: bytes, package: bytes) -> bytes:
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="files"; filename="' + TOOL.filename.encode() + b'"'
        b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + package
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def send(proxy: Proxy, content_type: bytes, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}{FILES}",
        content=body,
        headers=[(b"x-api-key", WRITER.encode()), (b"content-type", content_type)],
        timeout=30,
    )


def uploaded(proxy: Proxy) -> list[str]:
    got = httpx.get(f"{proxy.url}/api/channels/team/packages", headers={"x-api-key": WRITER})
    return [p["filename"] for p in got.json()["packages"]]


REFUSED = {
    "71-characters": b"b" * 71,
    "300-characters": b"b" * 300,
    "5000-characters": b"b" * 5000,
    "quote-inside": b"ab\\'c\"d",
    "non-ascii": "grenzé".encode("latin-1"),
    "angle-brackets": b"<boundary>",
    "trailing-space-quoted": b'"abc "',
}


@pytest.mark.parametrize("boundary", REFUSED.values(), ids=REFUSED.keys())
def test_a_boundary_outside_rfc_2046_is_a_400_and_keeps_nothing(proxy, package, boundary):
    logged = len(proxy.log())
    content_type = b"multipart/form-data; boundary=" + boundary
    answer = send(proxy, content_type, form(boundary.strip(b'"'), package))
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "boundary" in answer.json()["error"]
    assert uploaded(proxy) == []
    log = proxy.log()[logged:]
    assert '"request failed"' not in log and "Traceback" not in log
    assert log.count('"upload refused"') == 1


ACCEPTED = {
    "curl": b"------------------------d74496d66958873e",
    "requests-httpx": b"7f721745e409fdca8691db67dbe777b1",
    "browser": b"----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "go": b"c4b2f9e1" * 7 + b"0123",
    "70-characters-of-every-kind": b"'()+_,-./:=? " + b"a" * 56 + b"Z",
    "quoted": b'"simple boundary"',
}


@pytest.mark.parametrize("boundary", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_boundaries_real_clients_send_still_upload(proxy, package, boundary):
    content_type = b"multipart/form-data; boundary=" + boundary
    answer = send(proxy, content_type, form(boundary.strip(b'"'), package))
    assert answer.status_code == 201, answer.text
    assert uploaded(proxy) == [TOOL.filename]
    deleted = httpx.delete(
        f"{proxy.url}/api/channels/team/packages/linux-64/{TOOL.filename}",
        headers={"x-api-key": WRITER},
    )
    assert deleted.status_code == 200
