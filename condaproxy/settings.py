"""One frozen settings object, read once from proxy.toml plus CONDAPROXY_* overrides.

The sections are msgspec Structs (rules/config_sections.py) and `msgspec.convert` checks types
and ranges. Values from the file are taken strictly (a boolean is a TOML boolean); values from the
environment (overrides, and `env:` references) are text, parsed by the one parser per kind in
`values.py`.
Every error names the file, the key, and where the value came from, so a bad config stops
start-up with one line.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .rules.cache_dir import unsafe_cache_dir
from .rules.config_checks import (
    check_channel_nesting,
    check_distinct_tokens,
    check_upstream_auth,
)
from .rules.config_sections import (
    OPTIONAL_SECTIONS,
    SECTIONS,
    CacheSettings,
    ChannelSettings,
    ClusterSettings,
    LogSettings,
    MetricsSettings,
    PolicySettings,
    ServerSettings,
    StorageSettings,
    TokenSettings,
    UploadSettings,
    UpstreamSettings,
)
from .rules.config_text import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    ConfigError,
    FromEnv,
    Secret,
    apply_env_overrides,
    convert,
    env_references,
    resolve_references,
    shown_value,
    without_values,
)
from .rules.config_urls import Shape, check_http_url
from .rules.paths import RESERVED_SEGMENTS, valid_channel_name
from .rules.policy import Policy, compile_policy
from .rules.shared_config import check_shared

# The sections are declared in rules/config_sections.py; every layer imports them from here.
__all__ = [
    "CONFIG_ENV",
    "PEER_TOKEN",
    "CacheSettings",
    "ChannelSettings",
    "ClusterSettings",
    "ConfigError",
    "LogSettings",
    "MetricsSettings",
    "PolicySettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "TokenSettings",
    "UploadSettings",
    "UpstreamSettings",
    "build_settings",
    "check_cache_path",
    "load_settings",
    "with_server_options",
]


class Settings(msgspec.Struct, frozen=True):
    server: ServerSettings = ServerSettings()
    cache: CacheSettings = CacheSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    uploads: UploadSettings = UploadSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    policy: PolicySettings = PolicySettings()
    storage: StorageSettings | None = None
    cluster: ClusterSettings | None = None
    channels: Mapping[str, ChannelSettings] = {}
    tokens: Mapping[str, TokenSettings] = {}
    source: str = "<defaults>"

    def secrets(self) -> list[str]:
        """Every credential value, so log and error output can mask them."""
        channel_secrets = [s for ch in self.channels.values() for s in ch.secrets()]
        metrics = [self.metrics.token.value] if self.metrics.token else []
        shared = []
        if self.storage is not None:
            held = (self.storage.access_key_id, self.storage.secret_access_key)
            shared += [s.value for s in held if s is not None]
        if self.cluster is not None and self.cluster.redis_url is not None:
            url = self.cluster.redis_url.value
            shared += [url, *[p for p in [urlsplit(url).password] if p]]
        tokens = [t.token.value for t in self.tokens.values()]
        return channel_secrets + tokens + metrics + shared

    def policy_rules(self) -> Policy:
        """The compiled policy (checked at load, so this cannot fail for loaded settings)."""
        return _policy(self.policy, self.channels, self.source)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the config file (or $CONDAPROXY_CONFIG, or ./proxy.toml) and apply env overrides."""
    env = os.environ if environ is None else environ
    config_path = Path(path or env.get(CONFIG_ENV) or DEFAULT_CONFIG)
    where = str(config_path)
    try:
        with open(config_path, "rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)  # a pipe (`--config <(...)`) is read too
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{where}: larger than {MAX_CONFIG_BYTES} bytes: not a config file")
        raw = tomllib.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not valid UTF-8") from None
    except RecursionError:  # tomllib descends into nested arrays and tables recursively
        raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from None
    referenced = set(env_references(raw))
    apply_env_overrides(raw, env, referenced, where, {**SECTIONS, **OPTIONAL_SECTIONS})
    try:
        return build_settings(raw, where, env)
    except ConfigError as exc:  # never quoting what `env:` read: it is there to stay secret
        hidden = [env[name] for name in referenced if name in env]
        raise ConfigError(without_values(str(exc), hidden)) from None


def build_settings(raw: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Settings:
    unknown = set(raw) - set(SECTIONS) - set(OPTIONAL_SECTIONS) - {"channels", "tokens"}
    if unknown:
        raise ConfigError(f"{where}: unknown section or key '{sorted(unknown)[0]}'")
    resolved = resolve_references(raw, "", where, env)
    sections = {
        name: convert(resolved.get(name, {}), cls, name, where) for name, cls in SECTIONS.items()
    }
    channels = {
        name: _channel(name, body, where)
        for name, body in _table(resolved, "channels", where).items()
    }
    check_channel_nesting(channels, where)
    tokens = {
        name: _token(name, body, channels, where)
        for name, body in _table(resolved, "tokens", where).items()
    }
    check_distinct_tokens(tokens, where, PEER_TOKEN)
    metrics = sections["metrics"]
    if isinstance(metrics, MetricsSettings) and metrics.token and len(metrics.token.value) < 8:
        raise ConfigError(f"{where}: 'metrics.token' is too short (at least 8 characters)")
    server = sections["server"]
    assert isinstance(server, ServerSettings)
    _check_server(server, where)
    policy = sections["policy"]
    assert isinstance(policy, PolicySettings)
    _policy(policy, channels, where)  # refused here, with the key, or never
    optional = {
        name: convert(resolved[name], cls, name, where)
        for name, cls in OPTIONAL_SECTIONS.items()
        if name in resolved
    }
    cluster = optional.get("cluster")
    check_shared(optional.get("storage"), cluster, where)
    if isinstance(cluster, ClusterSettings) and cluster.peer_token is not None:
        if PEER_TOKEN in tokens:
            raise ConfigError(f"{where}: 'tokens.{PEER_TOKEN}' is reserved for cluster peers")
        tokens[PEER_TOKEN] = TokenSettings(PEER_TOKEN, cluster.peer_token, {"*": "read"})
        check_distinct_tokens(tokens, where, PEER_TOKEN)
    return Settings(channels=channels, tokens=tokens, source=where, **sections, **optional)  # type: ignore[arg-type]


def with_server_options(settings: Settings, **given: object) -> Settings:
    """`serve --host/--port/--workers` through the same rules as the file's [server] (a
    command line cannot start 1000 workers or listen on port 70000 the file could not)."""
    options = {
        k: FromEnv(str(v), f"command line option --{k}") for k, v in given.items() if v is not None
    }
    if not options:
        return settings
    body = {**msgspec.to_builtins(settings.server), **options}
    server = convert(body, ServerSettings, "server", settings.source)
    _check_server(server, settings.source)
    return msgspec.structs.replace(settings, server=server)


def _check_server(server: ServerSettings, where: str) -> None:
    for entry in server.trusted_proxies:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"{where}: 'server.trusted_proxies' entry {entry!r} is not an address or network"
            ) from None
    if server.external_url:
        _url(server.external_url, "server.external_url", where)


def _policy(policy: PolicySettings, channels: Mapping[str, ChannelSettings], where: str) -> Policy:
    try:
        return compile_policy(
            policy.cooldown,
            policy.deny,
            policy.allow,
            policy.exempt,
            {name: ch.cooldown for name, ch in channels.items()},
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


MAX_CONFIG_BYTES = 1 << 20  # a config of a thousand channels is a few hundred KiB
PEER_TOKEN = "cluster-peer"  # the token name replicas read each other's downloads with
# converting one table


def _table(raw: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: '{name}' must be a table of [{name}.<name>] sections")
    return table


# channels and tokens


def _channel(name: str, body: Any, where: str) -> ChannelSettings:
    key = f"channels.{name}"
    if not valid_channel_name(name):
        raise ConfigError(
            f"{where}: '{key}' is not a usable channel name (letters, digits, '_.+-' per "
            f"segment; not one of the proxy's own routes: {', '.join(sorted(RESERVED_SEGMENTS))})"
        )
    channel: ChannelSettings = convert(body, ChannelSettings, key, where, name=name)
    if channel.upstream is not None:
        upstream = _url(channel.upstream, f"{key}.upstream", where, userinfo=True)
        channel = msgspec.structs.replace(channel, upstream=upstream)
    origins = tuple(
        _url(o.strip(), f"{key}.allowed_origins", where, "origin") for o in channel.allowed_origins
    )
    check_upstream_auth(channel, key, where)
    if channel.mirror_only and channel.upstream is None:
        raise ConfigError(f"{where}: '{key}' is mirror_only but has no upstream")
    return msgspec.structs.replace(
        channel,
        allow_upstream=tuple(n.strip().lower() for n in channel.allow_upstream),
        allowed_origins=origins,
    )


def _url(text: str, key: str, where: str, shape: Shape = "base", userinfo: bool = False) -> str:
    try:
        return check_http_url(text, shape, userinfo)
    except ValueError as exc:
        shown = shown_value(text)  # its userinfo, path token and query masked, or not at all
        raise ConfigError(f"{where}: '{key}' {exc}: {shown!r}") from None


def _token(
    name: str, body: Any, channels: Mapping[str, ChannelSettings], where: str
) -> TokenSettings:
    key = f"tokens.{name}"
    token: TokenSettings = convert(body, TokenSettings, key, where, name=name)
    if len(token.token.value) < 8:
        raise ConfigError(f"{where}: '{key}.token' is too short (at least 8 characters)")
    for channel in token.roles:
        if channel != "*" and channel not in channels:
            raise ConfigError(f"{where}: '{key}.roles' names unknown channel '{channel}'")
    return token


# the environment


def check_cache_path(settings: Settings) -> None:
    """The cache directory is one of its own (rules/cache_dir.py), exists (or can be made)
    and is writable: one line otherwise."""
    path = settings.cache.path
    where = settings.source
    try:
        entries = os.listdir(path) if path.is_dir() else []
    except OSError:
        entries = []  # unreadable: said below, by the probe
    why = unsafe_cache_dir(os.path.realpath(path), entries)
    if why is not None:
        raise ConfigError(f"{where}: 'cache.path' {str(path)!r} {why}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise ConfigError(f"{where}: 'cache.path' {str(path)!r} is not a directory") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{where}: 'cache.path' {str(path)!r} is not usable: {reason}") from None
