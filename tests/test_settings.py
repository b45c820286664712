from pathlib import Path

import pytest

from condaproxy.settings import ConfigError, load_settings

GOOD = """
[server]
port = 9000
[cache]
path = "/var/cache/condaproxy"
repodata_ttl = 0
[channels.conda-forge]
upstream = "https://conda.anaconda.org/conda-forge/"
[channels."org/private"]
upstream = "https://conda.anaconda.org/org"
upstream_token = "env:ORG_TOKEN"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return path


def test_loads_the_shipped_config():
    settings = load_settings(Path(__file__).parents[1] / "proxy.toml", environ={})
    assert {"conda-forge", "bioconda", "main"} <= set(settings.channels)
    assert settings.server.port == 8080


def test_reads_values_and_secrets_from_the_environment(tmp_path):
    settings = load_settings(write(tmp_path, GOOD), environ={"ORG_TOKEN": "s3cret"})
    assert settings.server.port == 9000
    assert settings.cache.repodata_ttl == 0
    assert settings.channels["conda-forge"].upstream == "https://conda.anaconda.org/conda-forge"
    token = settings.channels["org/private"].upstream_token
    assert token is not None and token.value == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.secrets() == ["s3cret"]


def test_environment_overrides_single_keys(tmp_path):
    env = {
        "ORG_TOKEN": "x",
        "CONDAPROXY_SERVER_PORT": "9100",
        "CONDAPROXY_CACHE_REPODATA_TTL": "5",
        "CONDAPROXY_CHANNELS__CONDA_FORGE__UPSTREAM": "https://mirror.example/cf",
    }
    settings = load_settings(write(tmp_path, GOOD), environ=env)
    assert settings.server.port == 9100
    assert settings.cache.repodata_ttl == 5
    assert settings.channels["conda-forge"].upstream == "https://mirror.example/cf"


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, GOOD)
    settings = load_settings(environ={"CONDAPROXY_CONFIG": str(path), "ORG_TOKEN": "x"})
    assert settings.source == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
        ("[serverz]\n", "unknown section or key 'serverz'"),
        ("[server]\nport = 'abc'\n", "'server.port' must be int"),
        ("[server]\nport = 70000\n", "'server.port' must be int <= 65535, got 70000"),
        ("[channels.x]\nupstream = 'ftp://nope'\n", "'channels.x.upstream' is not an http(s) URL"),
        ("[channels.x]\nmirror = 'http://a'\n", "unknown key 'channels.x.mirror'"),
        (
            "[channels.x]\nupstream = 'http://a'\nupstream_bearer = 'env:NOPE'\n",
            "'channels.x.upstream_bearer' refers to environment variable NOPE",
        ),
        ("[cache\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


# supply-chain policy (issue 13): refused at load, one line naming the key


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('[policy]\ncooldown = "7y"\n', "'policy.cooldown' '7y' has an unknown unit"),
        ('[policy]\ncooldown = "-1d"\n', "'policy.cooldown' '-1d' is negative"),
        ('[policy]\ndeny = ["numpy[sha256=12]"]\n', "'policy.deny' entry"),
        ('[policy]\nallow = ["a::b"]\n', "'policy.allow' entry"),
        ('[policy.exempt]\n"openssl" = "soon"\n', "'policy.exempt.\"openssl\"'"),
        ('[policy]\ncolour = "red"\n', "unknown key 'policy.colour'"),
        (
            '[channels.cf]\nupstream = "https://x.example/cf"\ncooldown = "3x"\n',
            "'channels.cf.cooldown'",
        ),
    ],
)
def test_bad_policy_is_refused_at_load_naming_the_key(tmp_path: Path, body: str, says: str) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_policy_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[channels.cf]\nupstream = "https://x.example/cf"\n')
    settings = load_settings(
        config,
        environ={"CONDAPROXY_POLICY_COOLDOWN": "P7D", "CONDAPROXY_CHANNELS__CF__COOLDOWN": "3d"},
    )
    rules = settings.policy_rules()
    assert rules.cooldown.seconds == 7 * 86400 and rules.channels["cf"].seconds == 3 * 86400
