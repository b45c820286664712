"""One frozen settings object, read once from proxy.toml plus CONDAPROXY_* overrides.

The schema is declared as msgspec Structs and `msgspec.convert` checks types and ranges. Values
from the file are taken strictly (a boolean is a TOML boolean); values from the environment
(overrides, and `env:` references) are text, parsed by the one parser per kind in `values.py`.
Every error names the file, the key, and where the value came from, so a bad config stops
start-up with one line.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from .rules.cache_dir import unsafe_cache_dir
from .rules.config_checks import (
    check_channel_nesting,
    check_distinct_tokens,
    check_upstream_auth,
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

# Byte counts: written `2GiB`, `500MB` or as a number; parsed by values.parse_size.
_BYTES = {"unit": "bytes"}
Size = Annotated[int, msgspec.Meta(ge=0, extra=_BYTES)]
PositiveSize = Annotated[int, msgspec.Meta(ge=1, extra=_BYTES)]
DocumentSize = Annotated[int, msgspec.Meta(ge=1 << 20, extra=_BYTES)]
# Finite and at most a day: TOML and the environment both spell `inf`, which aiohttp cannot
# schedule (every upstream request would fail with an OverflowError).
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
Role = Literal["read", "write", "admin"]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ServerSettings(_Section, frozen=True):
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"  # "": every interface
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # The proxy's address as clients see it (for the status page's snippets); empty: taken from
    # each request (Host, and X-Forwarded-* from a trusted proxy).
    external_url: str = ""
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For/-Proto/-Host are
    # believed: the client address in logs, the external URL shown to users.
    trusted_proxies: tuple[str, ...] = ()
    # Seconds a SIGTERM waits for in-flight responses before it cuts the rest off (a client
    # that stopped reading would otherwise hold the stop forever); with the 5 s more that
    # downloads no client waits for may take, under Kubernetes' default 30 s grace period.
    shutdown_timeout: Seconds = 20.0
    # Seconds a connection gets to send a request's line and header fields (from its opening,
    # the previous response's end or the head's first byte): then it is closed, with a 408.
    header_timeout: Seconds = 30.0
    # Seconds a response may stay blocked on a client that takes no bytes: then it is dropped.
    send_timeout: Seconds = 60.0


class LogSettings(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: JSON unless on a terminal


class CacheSettings(_Section, frozen=True):
    path: Path = Path("./cache")
    repodata_ttl: Annotated[int, msgspec.Meta(ge=0)] = 60
    negative_ttl: Annotated[int, msgspec.Meta(ge=0)] = 30
    max_size: Size = 0  # bytes of cached blobs; 0 = unbounded
    min_free: Size = 1024**3  # below this much free disk, stop caching (still proxying)
    # Largest decompressed upstream metadata document (repodata.json, shard index) accepted;
    # conda-forge's linux-64 repodata.json is ~300 MB, so this leaves room to spare.
    max_repodata_size: DocumentSize = 768 * 1024**2
    # Pass a changed upstream repodata.json.zst through to the client that asked while it is
    # checked behind it (first byte at once, last byte held until the snapshot is adopted).
    # Off by default: a body the proxy refuses then ends that client's transfer early, where
    # otherwise it would get the previous snapshot or a 502 (cache/following.py).
    refresh_passthrough: bool = False


class UpstreamSettings(_Section, frozen=True):
    connect_timeout: Seconds = 10.0
    read_timeout: Seconds = 60.0


class UploadSettings(_Section, frozen=True):
    max_upload_size: PositiveSize = 2 * 1024**3
    # Decompression budget for checking an archive's members: at most this many bytes in all,
    # and at most `max_unpacked_ratio` times the upload's size once past 256 MiB.
    max_unpacked_size: PositiveSize = 16 * 1024**3
    max_unpacked_ratio: Annotated[int, msgspec.Meta(ge=1)] = 100
    read_timeout: Seconds = 30.0  # seconds without body progress before an upload is cut (408)


class MetricsSettings(_Section, frozen=True):
    token: Secret | None = None  # a bearer token that sees private channel names in /metrics


class PolicySettings(_Section, frozen=True):
    """Supply-chain policy (issue 13, README "Supply-chain policy"): checked strictly at load
    (rules/policy.py); an age is text like "7d", "P7D", an RFC 3339 cutoff, or 0 (off)."""

    cooldown: str | int = 0
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    exempt: dict[str, str | int] = {}
    # TEST ONLY: a file holding a number of seconds added to the policy's clock (the end-to-end
    # tests move time forward in a running proxy). Never set it in a deployment.
    test_clock_file: str = ""


class TokenSettings(_Section, frozen=True):
    """A proxy-side token: a name (for logs and listings), its value and a role per channel
    (`*` stands for every channel)."""

    name: str
    token: Secret
    roles: dict[str, Role] = {}

    def role_for(self, channel: str) -> str | None:
        return self.roles.get(channel, self.roles.get("*"))


class ChannelSettings(_Section, frozen=True):
    name: str
    upstream: str | None = None  # None: a local-only channel, served entirely from uploads
    upstream_token: Secret | None = None
    upstream_username: str | None = None
    upstream_password: Secret | None = None
    upstream_bearer: Secret | None = None
    private: bool = False  # every path needs a read token
    mirror_only: bool = False  # refuses uploads
    allow_upstream: tuple[str, ...] = ()  # local names that still show upstream records
    # Extra origins (scheme://host[:port]) that metadata may send the proxy to, beyond those
    # whose address is of the same class (public, private, loopback) as the upstream's.
    allowed_origins: tuple[str, ...] = ()
    cooldown: str | int | None = None  # this channel's age, over [policy] cooldown

    def secrets(self) -> list[str]:
        held = (self.upstream_token, self.upstream_password, self.upstream_bearer)
        found = [s.value for s in held if s is not None]
        password = urlsplit(self.upstream).password if self.upstream else None
        return [s for s in [*found, password] if s]


class StorageSettings(_Section, frozen=True):
    """[storage]: an S3-compatible bucket shared by every replica; the local cache is its L1.
    Absent, the proxy is a single node and nothing below is ever touched."""

    url: str  # s3://bucket[/prefix]
    endpoint: str = ""  # an S3-compatible endpoint (MinIO, Ceph RGW, R2...); empty: AWS
    region: str = "us-east-1"
    # Both or neither; neither: the SDK's ambient credentials (IRSA, instance profile...).
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    allow_http: bool = False  # an http:// endpoint sends requests (not keys) in clear
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0  # to the first byte
    # After a failure the store is taken as down for this long: misses go upstream (kept in
    # L1 only), uploads get a 503, /readyz says so; then it is tried again.
    retry_after: Annotated[float, msgspec.Meta(gt=0, le=600)] = 15.0
    # Bytes of cached blobs (`cas/`) the bucket may hold; 0: unbounded (a lifecycle rule on
    # `cas/` bounds it instead). Checked every `evict_interval` seconds by one replica at a
    # time (with Redis), oldest first; uploads are never evicted.
    max_size: Size = 0
    evict_interval: Annotated[float, msgspec.Meta(ge=0.1, le=86400)] = 300.0

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def prefix(self) -> str:
        """The key prefix, "" or ending in "/"."""
        path = urlsplit(self.url).path.strip("/")
        return f"{path}/" if path else ""


class ClusterSettings(_Section, frozen=True):
    """[cluster]: how replicas sharing [storage] learn of each other's changes."""

    redis_url: Secret | None = None  # redis:// or rediss://; none: polling only
    poll_interval: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = 2.0  # upload visibility bound
    replica_id: str = ""  # empty: host name and process id
    # With Redis: a download's lease (renewed while it runs), and how long another replica
    # waits for the owner's copy in the bucket before fetching the file itself.
    lease: Annotated[float, msgspec.Meta(ge=1, le=600)] = 6.0
    owner_wait: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0
    # With Redis: this replica's address for the others (http://$(POD_IP):8080). A replica
    # waiting on this one's download then streams it from here as it arrives (verifying it),
    # authenticated by `peer_token`, a read token for every channel shared by the replicas.
    peer_url: str = ""
    peer_token: Secret | None = None
    peer_timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 5.0  # no byte for this long


_SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSettings,
    "cache": CacheSettings,
    "upstream": UpstreamSettings,
    "uploads": UploadSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
    "policy": PolicySettings,
}
# Sections that exist only when written (or named by a CONDAPROXY_<SECTION>_* variable).
_OPTIONAL: dict[str, type[_Section]] = {"storage": StorageSettings, "cluster": ClusterSettings}


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
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from None
    referenced = set(env_references(raw))
    apply_env_overrides(raw, env, referenced, where, {**_SECTIONS, **_OPTIONAL})
    try:
        return build_settings(raw, where, env)
    except ConfigError as exc:  # never quoting what `env:` read: it is there to stay secret
        hidden = [env[name] for name in referenced if name in env]
        raise ConfigError(without_values(str(exc), hidden)) from None


def build_settings(raw: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Settings:
    unknown = set(raw) - set(_SECTIONS) - set(_OPTIONAL) - {"channels", "tokens"}
    if unknown:
        raise ConfigError(f"{where}: unknown section or key '{sorted(unknown)[0]}'")
    resolved = resolve_references(raw, "", where, env)
    sections = {
        name: convert(resolved.get(name, {}), cls, name, where) for name, cls in _SECTIONS.items()
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
        for name, cls in _OPTIONAL.items()
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
