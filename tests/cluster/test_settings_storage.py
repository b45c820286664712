"""[storage] and [cluster] are checked strictly at start-up, one line naming the key; without
them the settings are exactly what they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from condaproxy.settings import ConfigError, load_settings

BASE = '[channels.local]\nupstream = "https://conda.anaconda.org/conda-forge"\n'
ENV = {"KEY_ID": "AKIAEXAMPLEKEY", "SECRET": "very-secret-value", "REDIS": "redis://:pw@r:6379"}


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "proxy.toml"
    path.write_text(BASE + text)
    return load_settings(path, environ=ENV if environ is None else environ)


def test_without_storage_nothing_shared_is_configured(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.storage is None and settings.cluster is None


def test_storage_reads_credentials_from_the_environment_and_keeps_them_secret(
    tmp_path: Path,
) -> None:
    settings = load(
        tmp_path,
        '[storage]\nurl = "s3://my-bucket/a/b/"\nendpoint = "https://minio.example:9000"\n'
        'access_key_id = "env:KEY_ID"\nsecret_access_key = "env:SECRET"\n'
        '[cluster]\nredis_url = "env:REDIS"\npoll_interval = 1.5\n',
    )
    assert settings.storage is not None and settings.cluster is not None
    assert (settings.storage.bucket, settings.storage.prefix) == ("my-bucket", "a/b/")
    assert settings.cluster.poll_interval == 1.5
    shown = repr(settings)
    assert "very-secret-value" not in shown and "pw@" not in shown
    assert {"very-secret-value", "AKIAEXAMPLEKEY", "pw"} <= set(settings.secrets())


def test_storage_url_alone_is_enough_and_an_override_can_set_it(tmp_path: Path) -> None:
    settings = load(tmp_path, "", {"CONDAPROXY_STORAGE_URL": "s3://bucket-one"})
    assert settings.storage is not None and settings.storage.prefix == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[storage]\nendpoint = "https://x"\n', "'storage.url' is required"),
        ('[storage]\nurl = "gs://bucket"\n', "'storage.url' must be s3://"),
        ('[storage]\nurl = "s3://Bad_Bucket"\n', "'storage.url' must be s3://"),
        ('[storage]\nurl = "s3://ab"\n', "'storage.url' must be s3://"),
        ('[storage]\nurl = "s3://bucket/../x"\n', "'storage.url' prefix"),
        ('[storage]\nurl = "s3://bucket/a?b=1"\n', "'storage.url' prefix"),
        ('[storage]\nurl = "s3://bucket"\nendpoint = "ftp://x"\n', "'storage.endpoint'"),
        ('[storage]\nurl = "s3://bucket"\nendpoint = "http://x:9000"\n', "allow_http"),
        (
            '[storage]\nurl = "s3://bucket"\naccess_key_id = "env:KEY_ID"\n',
            "go together",
        ),
        ('[storage]\nurl = "s3://bucket"\ntimeout = 0\n', "'storage.timeout'"),
        ('[storage]\nurl = "s3://bucket"\nregoin = "x"\n', "unknown key 'storage.regoin'"),
        ("[cluster]\npoll_interval = 1\n", "[cluster] needs [storage]"),
        (
            '[storage]\nurl = "s3://bucket"\n[cluster]\nredis_url = "http://r"\n',
            "'cluster.redis_url'",
        ),
        (
            '[storage]\nurl = "s3://bucket"\n[cluster]\npoll_interval = 0\n',
            "'cluster.poll_interval'",
        ),
        ('[storage]\nurl = "s3://bucket"\nsecret_access_key = 5\n', "***"),
        (
            '[storage]\nurl = "s3://bucket"\n[cluster]\npeer_url = "ftp://x"\npeer_token = "'
            + "p" * 20
            + '"\n',
            "'cluster.peer_url' is not an http(s) URL",
        ),
        (
            '[storage]\nurl = "s3://bucket"\n[cluster]\npeer_url = "http://10.0.0.1:8080"\n',
            "needs 'cluster.peer_token'",
        ),
        (
            '[storage]\nurl = "s3://bucket"\n[cluster]\npeer_url = "http://p:1"\n'
            'peer_token = "short"\n',
            "at least 16 characters",
        ),
        (
            '[storage]\nurl = "s3://bucket"\n[cluster]\npeer_token = "' + "p" * 20 + '"\n'
            '[tokens.cluster-peer]\ntoken = "' + "t" * 20 + '"\n',
            "reserved for cluster peers",
        ),
    ],
)
def test_a_bad_shared_storage_config_is_refused_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert message in str(raised.value)
    assert "very-secret-value" not in str(raised.value)


def test_check_config_shows_shared_storage_with_its_secrets_masked(tmp_path: Path) -> None:
    from condaproxy.ops.config_check import effective

    settings = load(
        tmp_path,
        '[storage]\nurl = "s3://my-bucket"\naccess_key_id = "env:KEY_ID"\n'
        'secret_access_key = "env:SECRET"\n[cluster]\nredis_url = "env:REDIS"\n',
    )
    shown = effective(settings)
    assert shown["storage"]["url"] == "s3://my-bucket"
    text = str(shown)
    assert "very-secret-value" not in text and "AKIAEXAMPLEKEY" not in text and ":pw@" not in text


def test_the_peer_token_reads_every_channel_and_nothing_more(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[storage]\nurl = "s3://bucket"\n[cluster]\npeer_url = "http://10.0.0.7:8080"\n'
        'peer_token = "env:SECRET"\n',
    )
    peer = settings.tokens["cluster-peer"]
    assert peer.token.value == "very-secret-value"
    assert peer.role_for("local") == "read" and peer.roles == {"*": "read"}
