"""A hostile uploader sends a multipart body of nothing but empty parts that are not files. Each
costs parsing, no memory, so the body limit alone let 2 GiB of them keep a worker thread (the
pool that also serves reads of the cache) busy for minutes: 48 MiB took 6 s here. The parts
that are not files are bounded (Quetz's form sends one, `force`): past the bound the request is
a 400 naming it, whatever shape the parts take. Real proxy process (upload_env.py)."""

from __future__ import annotations

import httpx
import pytest

from condaproxy.web.bodies import MAX_FIELD_PARTS
from tests.hostile.archives import STEM, conda
from tests.hostile.upload_env import LIMIT, WRITE, Env, env, refused

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the module-scoped fixture, one proxy for this module

BOUNDARY = b"b0undary"
# Parts that are not a file of the `files` field, each as small as it can be.
SHAPES = {
    "other-field": b'Content-Disposition: form-data; name="x"\r\n\r\n',
    "files-without-filename": b'Content-Disposition: form-data; name="files"\r\n\r\n',
    "no-disposition": b"Content-Type: text/plain\r\n\r\n",
    "kept-field-repeated": b'Content-Disposition: form-data; name="force"\r\n\r\n',
}


def _body(junk: bytes, count: int, with_file: bool) -> bytes:
    parts = [b"--" + BOUNDARY + b"\r\n" + junk + b"\r\n"] * count
    if with_file:
        disposition = f'Content-Disposition: form-data; name="files"; filename="{STEM}.conda"'
        head = disposition.encode() + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        parts.append(b"--" + BOUNDARY + b"\r\n" + head + conda() + b"\r\n")
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def _post(env: Env, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{env.proxy.url}/api/channels/local/files",
        content=body,
        headers={
            "x-api-key": WRITE,
            "content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}",
        },
        timeout=60,
    )


@pytest.mark.parametrize("count", [MAX_FIELD_PARTS + 1, 50_000])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_body_of_parts_that_are_not_files_is_refused_at_the_bound(env, shape, count):
    body = _body(SHAPES[shape], count, with_file=True)
    assert len(body) <= LIMIT  # refused for its parts, not its size

    def act() -> tuple[int, bytes]:
        got = _post(env, body)
        return got.status_code, got.content

    refused(env, act, 400, f"more than {MAX_FIELD_PARTS} form fields")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_few_extra_fields_beside_the_file_are_still_accepted(env, shape):
    got = _post(env, _body(SHAPES[shape], MAX_FIELD_PARTS, with_file=True))
    try:
        assert got.status_code == 201, got.text
    finally:
        if got.status_code == 201:
            env.delete(f"linux-64/{STEM}.conda")
