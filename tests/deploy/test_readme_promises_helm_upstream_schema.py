"""README "Kubernetes (Helm)": "Upstream URLs must not carry credentials (`user:password@`,
`/t/<token>/`): they would land in the ConfigMaps", and "Every value is checked against
`values.schema.json`". The schema refused a path token only when a `/` followed it, so an
upstream ending in its token (`https://conda.anaconda.org/t/<token>`) was rendered into the
ConfigMap. Checked against the schema itself (no helm needed)."""

from __future__ import annotations

import json

import pytest

from tests.support.processes import ROOT

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((ROOT / "helm" / "condaproxy" / "values.schema.json").read_text())
REFUSED = [
    "https://ci:secret@conda.anaconda.org/my-org",
    "https://conda.anaconda.org/t/abc-123/my-org",
    "https://conda.anaconda.org/t/abc-123/my-org/",
    "https://conda.anaconda.org/t/abc-123",
    "https://conda.anaconda.org/t/abc-123/",
    "https://mirror.example/conda/t/abc-123",
]
ACCEPTED = [
    "https://conda.anaconda.org/conda-forge",
    "https://mirror.example/t",  # a path segment named t, no token after it
    "https://mirror.example/tools/t2/my-org",
    "https://mirror.example/at/abc/my-org",
]


def valid(upstream: str) -> bool:
    values = {"channels": {"team": {"upstream": upstream}}}
    validator = jsonschema.Draft7Validator(SCHEMA)
    return not any(
        "upstream" in [str(p) for p in error.absolute_path]
        for error in validator.iter_errors(values)
    )


@pytest.mark.parametrize("upstream", REFUSED)
def test_an_upstream_carrying_credentials_is_refused(upstream: str) -> None:
    assert not valid(upstream)


@pytest.mark.parametrize("upstream", ACCEPTED)
def test_an_upstream_without_credentials_is_accepted(upstream: str) -> None:
    assert valid(upstream)
