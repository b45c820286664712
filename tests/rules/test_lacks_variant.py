"""Which upstream answers to one format of a document (`repodata.json.zst`) mean "ask the next
format" (conditional.lacks_variant): what servers say for a file they do not have, never what a
struggling upstream says."""

from __future__ import annotations

import pickle

import pytest

from condaproxy.rules.conditional import lacks_variant
from condaproxy.rules.errors import UpstreamRefused


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 406, 410, 451, 501])
def test_a_file_not_served_here_asks_the_next_format(status: int) -> None:
    assert lacks_variant(status)


@pytest.mark.parametrize("status", [200, 206, 304, 408, 429, 500, 502, 503, 504])
def test_a_struggling_upstream_is_not_asked_again(status: int) -> None:
    assert not lacks_variant(status)


def test_the_status_survives_the_worker_boundary() -> None:
    sent = UpstreamRefused("https://u:p@up.example/x", "HTTP 403", 403)
    refused = pickle.loads(pickle.dumps(sent))
    assert (refused.code, refused.status, refused.reason) == (403, 502, "HTTP 403")
    assert "u:p" not in refused.message
