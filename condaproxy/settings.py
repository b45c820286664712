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
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from .paths import RESERVED_SEGMENTS, valid_channel_name
from .values import parse_bool, parse_size

ENV_PREFIX = "CONDAPROXY_"
CONFIG_ENV = "CONDAPROXY_CONFIG"
# Read by the admin CLI (`condaproxy purge|prefetch|stats`), not config keys.
CLIENT_ENV = frozenset({"CONDAPROXY_URL", "CONDAPROXY_TOKEN"})
DEFAULT_CONFIG = "proxy.toml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


class Secret:
    """A credential: its value is never part of repr/str, so it cannot leak into logs."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


# Byte counts: written `2GiB`, `500MB` or as a number; parsed by values.parse_size.
_BYTES = {"unit": "bytes"}
Size = Annotated[int, msgspec.Meta(ge=0, extra=_BYTES)]
PositiveSize = Annotated[int, msgspec.Meta(ge=1, extra=_BYTES)]
DocumentSize = Annotated[int, msgspec.Meta(ge=1 << 20, extra=_BYTES)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Role = Literal["read", "write", "admin"]
ROLES: tuple[str, ...] = ("read", "write", "admin")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ServerSettings(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # The proxy's address as clients see it (for the status page's snippets); empty: taken from
    # each request (Host, and X-Forwarded-* from a trusted proxy).
    external_url: str = ""
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For/-Proto/-Host are
    # believed: the client address in logs, the external URL shown to users.
    trusted_proxies: tuple[str, ...] = ()


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

    def secrets(self) -> list[str]:
        held = (self.upstream_token, self.upstream_password, self.upstream_bearer)
        found = [s.value for s in held if s is not None]
        password = urlsplit(self.upstream).password if self.upstream else None
        return [s for s in [*found, password] if s]


_SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSettings,
    "cache": CacheSettings,
    "upstream": UpstreamSettings,
    "uploads": UploadSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
}


class Settings(msgspec.Struct, frozen=True):
    server: ServerSettings = ServerSettings()
    cache: CacheSettings = CacheSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    uploads: UploadSettings = UploadSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    channels: Mapping[str, ChannelSettings] = {}
    tokens: Mapping[str, TokenSettings] = {}
    source: str = "<defaults>"

    def secrets(self) -> list[str]:
        """Every credential value, so log and error output can mask them."""
        channel_secrets = [s for ch in self.channels.values() for s in ch.secrets()]
        metrics = [self.metrics.token.value] if self.metrics.token else []
        return channel_secrets + [t.token.value for t in self.tokens.values()] + metrics


class _FromEnv(msgspec.Struct, frozen=True):
    """A value that came from the environment as text: parsed leniently, reported by source."""

    text: str
    origin: str  # e.g. "environment variable CONDAPROXY_CACHE_MAX_SIZE"


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
    referenced = set(_env_references(raw))
    _apply_env_overrides(raw, env, referenced, where)
    return build_settings(raw, where, env)


def build_settings(raw: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Settings:
    unknown = set(raw) - set(_SECTIONS) - {"channels", "tokens"}
    if unknown:
        raise ConfigError(f"{where}: unknown section or key '{sorted(unknown)[0]}'")
    resolved = _resolve_references(raw, "", where, env)
    sections = {
        name: _convert(resolved.get(name, {}), cls, name, where) for name, cls in _SECTIONS.items()
    }
    channels = {
        name: _channel(name, body, where)
        for name, body in _table(resolved, "channels", where).items()
    }
    tokens = {
        name: _token(name, body, channels, where)
        for name, body in _table(resolved, "tokens", where).items()
    }
    metrics = sections["metrics"]
    if isinstance(metrics, MetricsSettings) and metrics.token and len(metrics.token.value) < 8:
        raise ConfigError(f"{where}: 'metrics.token' is too short (at least 8 characters)")
    server = sections["server"]
    assert isinstance(server, ServerSettings)
    _check_server(server, where)
    return Settings(channels=channels, tokens=tokens, source=where, **sections)  # type: ignore[arg-type]


def _check_server(server: ServerSettings, where: str) -> None:
    for entry in server.trusted_proxies:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"{where}: 'server.trusted_proxies' entry {entry!r} is not an address or network"
            ) from None
    if server.external_url:
        parts = urlsplit(server.external_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"{where}: 'server.external_url' is not an http(s) URL")


# converting one table


def _convert(body: Any, cls: type[Any], key: str, where: str, **fixed: Any) -> Any:
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table")
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f.type for f in info.fields}
    values = dict(fixed)
    for name, value in body.items():
        if name not in fields or name in fixed:
            raise ConfigError(f"{where}: unknown key '{key}.{name}'{_origin(value)}")
        values[name] = _prepare(value, fields[name], f"{key}.{name}", where)
    try:
        return msgspec.convert(values, cls, dec_hook=_decode_custom)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, key, values, body, where)) from None


def _prepare(value: Any, kind: Any, key: str, where: str) -> Any:
    """Environment text parsed by the field's kind; sizes parsed from either source."""
    try:
        if isinstance(value, _FromEnv):
            return _from_text(value.text, kind)
        if _is_size(kind):
            return parse_size(value)
        return value
    except ValueError as exc:
        raise ConfigError(f"{where}: '{key}' {exc}{_origin(value)}") from None


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(f"must be {kind.__name__}, got {text!r}") from None


def _from_text(text: str, kind: Any) -> Any:
    kind = _unwrap(kind)
    if _is_size(kind):
        return parse_size(text)
    if isinstance(kind, msgspec.inspect.BoolType):
        return parse_bool(text)
    if isinstance(kind, msgspec.inspect.IntType):
        return _number(text, int)
    if isinstance(kind, msgspec.inspect.FloatType):
        return _number(text, float)
    if isinstance(kind, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(kind, msgspec.inspect.DictType):
        pairs = [item.partition("=") for item in text.split(",") if item.strip()]
        return {k.strip(): v.strip() for k, _, v in pairs}
    return text


def _unwrap(kind: Any) -> Any:
    if isinstance(kind, msgspec.inspect.UnionType):
        inner = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
        return inner[0] if len(inner) == 1 else kind
    return kind


def _is_size(kind: Any) -> bool:
    kind = _unwrap(kind)
    return isinstance(kind, msgspec.inspect.Metadata) and (kind.extra or {}).get("unit") == "bytes"


def _decode_custom(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise TypeError(f"Expected `{kind.__name__.lower()}` (text)")


_SECRET_FIELDS = frozenset({"token", "upstream_token", "upstream_password", "upstream_bearer"})
_EXPECTED = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")


def _explain(
    exc: msgspec.ValidationError,
    key: str,
    values: Mapping[str, Any],
    body: Mapping[str, Any],
    where: str,
) -> str:
    """msgspec's `Expected `int`, got `str` - at `$.port`` as `'server.port' must be int,
    got 'abc' (from ...)`."""
    match = _EXPECTED.match(str(exc))
    what = match["what"] if match else str(exc)
    path = (match["path"] or "") if match else ""
    field = path.lstrip(".").split(".")[0].split("[")[0]
    if what.startswith("Object missing required field"):
        missing = what.split("`")[1]
        return f"{where}: '{key}.{missing}' is required"
    shown = "***" if field in _SECRET_FIELDS else values.get(field, "")
    what = re.sub(r", got `[^`]*`", "", what).replace("Expected", "must be").replace("`", "")
    full = f"{key}.{field}" if field else key
    return f"{where}: '{full}' {what}, got {shown!r}{_origin(body.get(field))}"


def _origin(value: Any) -> str:
    return f" (from {value.origin})" if isinstance(value, _FromEnv) else ""


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
    channel: ChannelSettings = _convert(body, ChannelSettings, key, where, name=name)
    if channel.upstream is not None:
        upstream = channel.upstream.rstrip("/")
        parts = urlsplit(upstream)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"{where}: '{key}.upstream' is not an http(s) URL")
        channel = msgspec.structs.replace(channel, upstream=upstream)
    for origin in channel.allowed_origins:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.path.strip("/"):
            raise ConfigError(
                f"{where}: '{key}.allowed_origins' entry {origin!r} is not an origin "
                "(scheme://host[:port])"
            )
    if channel.mirror_only and channel.upstream is None:
        raise ConfigError(f"{where}: '{key}' is mirror_only but has no upstream")
    return msgspec.structs.replace(
        channel,
        allow_upstream=tuple(n.strip().lower() for n in channel.allow_upstream),
        allowed_origins=tuple(o.strip().rstrip("/") for o in channel.allowed_origins),
    )


def _token(
    name: str, body: Any, channels: Mapping[str, ChannelSettings], where: str
) -> TokenSettings:
    key = f"tokens.{name}"
    token: TokenSettings = _convert(body, TokenSettings, key, where, name=name)
    if len(token.token.value) < 8:
        raise ConfigError(f"{where}: '{key}.token' is too short (at least 8 characters)")
    for channel in token.roles:
        if channel != "*" and channel not in channels:
            raise ConfigError(f"{where}: '{key}.roles' names unknown channel '{channel}'")
    return token


# the environment


def _env_references(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value.startswith("env:"):
        yield value[4:]
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _env_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _env_references(item)


def _resolve_references(value: Any, key: str, where: str, env: Mapping[str, str]) -> Any:
    """`env:NAME` takes the value from the environment, so secrets stay out of the file."""
    if isinstance(value, str) and value.startswith("env:"):
        var = value[4:]
        if var not in env:
            raise ConfigError(
                f"{where}: '{key}' refers to environment variable {var}, which is not set"
            )
        return _FromEnv(env[var], f"environment variable {var}")
    if isinstance(value, Mapping):
        return {
            k: _resolve_references(v, f"{key}.{k}" if key else k, where, env)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_references(v, key, where, env) for v in value]
    return value


def _apply_env_overrides(
    raw: dict[str, Any], env: Mapping[str, str], referenced: set[str], where: str
) -> None:
    """CONDAPROXY_<SECTION>_<KEY>, CONDAPROXY_CHANNELS__<NAME>__<KEY> and
    CONDAPROXY_TOKENS__<NAME>__<KEY> override single keys. Any other CONDAPROXY_* variable
    (a typo) is an error, unless the file refers to it with `env:`."""
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var in {CONFIG_ENV, *CLIENT_ENV} or var in referenced:
            continue
        rest = var[len(ENV_PREFIX) :]
        given = _FromEnv(value, f"environment variable {var}")
        table = next((t for t in ("CHANNELS", "TOKENS") if rest.startswith(t + "__")), None)
        if table is not None:
            parts = rest[len(table) + 2 :].split("__")
            if len(parts) != 2 or not all(parts):
                raise ConfigError(
                    f"{where}: environment variable {var} must be "
                    f"{ENV_PREFIX}{table}__<NAME>__<KEY>"
                )
            entries = raw.setdefault(table.lower(), {})
            name = _match_name(parts[0], entries, table == "CHANNELS")
            entries.setdefault(name, {})[parts[1].lower()] = given
            continue
        section = next((s for s in _SECTIONS if rest.lower().startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                f"{where}: environment variable {var} names no config section "
                f"({', '.join(sorted(_SECTIONS))}, channels, tokens)"
            )
        raw.setdefault(section, {})[rest[len(section) + 1 :].lower()] = given


def _match_name(env_name: str, entries: Mapping[str, Any], channel: bool) -> str:
    def norm(name: str) -> str:
        return "".join(c if c.isalnum() else "_" for c in name).upper()

    for name in entries:
        if norm(name) == env_name.upper():
            return name
    return env_name.lower().replace("_", "-") if channel else env_name.lower()


def check_cache_path(settings: Settings) -> None:
    """The cache directory exists (or can be made) and is writable: one line otherwise."""
    path = settings.cache.path
    where = settings.source
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
