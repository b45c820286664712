"""`check-config`'s rules: the effective settings with every secret masked, warnings about
values that load but will bite, and tokens every conda client can carry."""

from __future__ import annotations

from pathlib import Path

from condaproxy.ops.config_check import CONDA_TOKEN, effective, new_token, warnings
from condaproxy.settings import ChannelSettings, Secret, TokenSettings
from tests.support.inproc import make_settings, token


def test_the_effective_settings_hide_every_secret(tmp_path: Path):
    settings = make_settings(
        tmp_path,
        [
            ChannelSettings("cf", "https://user:hunter2-pass@up.example/cf",
                            upstream_token=Secret("tok-0123456789"),
                            upstream_bearer=Secret("bearer-0123456789")),
            ChannelSettings("local"),
        ],
        [token("ops", "admin-token-0001", star="admin")],
        metrics_token="metrics-token-01",
    )  # fmt: skip
    shown = effective(settings)
    text = repr(shown)
    for secret in ("hunter2-pass", "tok-0123456789", "bearer-0123456789", "admin-token-0001",
                   "metrics-token-01", "user:"):  # fmt: skip
        assert secret not in text
    cf = shown["channels"]["cf"]
    assert cf["upstream"] == "https://***@up.example/cf"
    assert cf["upstream_token"] == cf["upstream_bearer"] == "***"
    assert shown["tokens"]["ops"] == {"name": "ops", "token": "***", "roles": {"*": "admin"}}
    assert shown["cache"]["path"] == str(tmp_path) and shown["cache"]["repodata_ttl"] == 60
    assert shown["channels"]["local"]["upstream"] is None


def test_warnings_name_what_will_bite(tmp_path: Path):
    settings = make_settings(
        tmp_path,
        [ChannelSettings("open"), ChannelSettings("closed", private=True),
         ChannelSettings("read", private=True)],
        [TokenSettings("odd", Secret("has/slash+plus="), {"read": "read"}),
         token("fine", "Abc-123-xyz-000", open="write")],
    )  # fmt: skip
    found = warnings(settings)
    assert len(found) == 2
    assert found[0].startswith("tokens.odd.token holds characters other than")
    assert found[1] == "channels.closed is private but no token may read it"


def test_new_tokens_are_letters_and_digits_of_the_asked_length():
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20
    assert all(len(t) == 40 and t.isalnum() and CONDA_TOKEN.match(t) for t in tokens)
    assert len(new_token(12)) == 12
