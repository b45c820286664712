from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3 import S3Server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.resume()  # a test that paused it must not leave it stopped
    server.stop()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()
