import base64

import pytest

from condaproxy.rules.auth import (
    Forbidden,
    Unauthorized,
    has_role,
    identify,
    presented_token,
    require,
)
from condaproxy.settings import Secret, TokenSettings

CI = TokenSettings("ci", Secret("ci-token-123"), {"internal": "write", "*": "read"})
ADMIN = TokenSettings("ops", Secret("ops-token-456"), {"*": "admin"})


@pytest.mark.parametrize(
    ("headers", "path_token"),
    [
        ({"x-api-key": "ci-token-123"}, None),
        ({"authorization": "Bearer ci-token-123"}, None),
        ({"authorization": "Basic " + base64.b64encode(b"anyone:ci-token-123").decode()}, None),
        ({}, "ci-token-123"),
    ],
)
def test_every_token_form_identifies_the_token(headers, path_token):
    assert identify(presented_token(headers, path_token), [CI, ADMIN]) is CI


def test_unknown_or_missing_tokens_identify_nobody():
    assert identify(presented_token({"x-api-key": "nope"}, None), [CI]) is None
    assert identify(presented_token({}, None), [CI]) is None
    assert presented_token({"authorization": "Basic !!!"}, None) is None


def test_roles_rank_and_wildcard():
    assert has_role(CI, "internal", "write")
    assert has_role(CI, "internal", "read")
    assert not has_role(CI, "internal", "admin")
    assert has_role(CI, "elsewhere", "read") and not has_role(CI, "elsewhere", "write")
    assert has_role(ADMIN, "anything", "write")


def test_require_says_401_or_403():
    with pytest.raises(Unauthorized, match="a token is required"):
        require(None, False, "internal", "write")
    with pytest.raises(Unauthorized, match="unknown token"):
        require(None, True, "internal", "write")
    with pytest.raises(Forbidden, match="token 'ci' may not write channel 'elsewhere'"):
        require(CI, True, "elsewhere", "write")
    assert Unauthorized.headers["www-authenticate"].startswith("Basic")
