"""One frozen settings object, read once from proxy.toml plus CONDAPROXY_* overrides.

Every validation error names the file and the key, so a bad config stops start-up with one line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "CONDAPROXY_"
CONFIG_ENV = "CONDAPROXY_CONFIG"
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


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1


@dataclass(frozen=True)
class CacheSettings:
    path: Path = Path("./cache")
    repodata_ttl: int = 60
    negative_ttl: int = 30
    max_size: int = 0  # bytes of cached blobs; 0 = unbounded
    min_free: int = 1024**3  # below this much free disk, stop caching (still proxying)
    # Largest decompressed upstream metadata document (repodata.json, shard index) accepted;
    # conda-forge's linux-64 repodata.json is ~300 MB, so this leaves room to spare.
    max_repodata_size: int = 768 * 1024**2


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class UploadSettings:
    max_upload_size: int = 2 * 1024**3
    # Decompression budget for checking an archive's members: at most this many bytes in all,
    # and at most `max_unpacked_ratio` times the upload's size once past 256 MiB.
    max_unpacked_size: int = 16 * 1024**3
    max_unpacked_ratio: int = 100
    read_timeout: float = 30.0  # seconds without body progress before an upload is cut (408)


@dataclass(frozen=True)
class MetricsSettings:
    token: Secret | None = None  # a bearer token that sees private channel names in /metrics


ROLES = ("read", "write", "admin")


@dataclass(frozen=True)
class TokenSettings:
    """A proxy-side token: a name (for logs and listings), its value and a role per channel
    (`*` stands for every channel)."""

    name: str
    token: Secret
    roles: Mapping[str, str]

    def role_for(self, channel: str) -> str | None:
        return self.roles.get(channel, self.roles.get("*"))


@dataclass(frozen=True)
class ChannelSettings:
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


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    channels: Mapping[str, ChannelSettings] = field(default_factory=dict)
    tokens: Mapping[str, TokenSettings] = field(default_factory=dict)
    source: str = "<defaults>"

    def secrets(self) -> list[str]:
        """Every credential value, so log and error output can mask them."""
        channel_secrets = [s for ch in self.channels.values() for s in ch.secrets()]
        metrics = [self.metrics.token.value] if self.metrics.token else []
        return channel_secrets + [t.token.value for t in self.tokens.values()] + metrics


_SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "cache": CacheSettings,
    "upstream": UpstreamSettings,
    "uploads": UploadSettings,
}
_CHANNEL_KEYS = {
    "upstream",
    "upstream_token",
    "upstream_username",
    "upstream_password",
    "upstream_bearer",
    "private",
    "mirror_only",
    "allow_upstream",
    "allowed_origins",
}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SECRET_KEYS = {"upstream_token", "upstream_password", "upstream_bearer"}


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
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from None
    _apply_env_overrides(raw, env)
    return build_settings(raw, where, env)


def build_settings(raw: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Settings:
    unknown = set(raw) - set(_SECTIONS) - {"channels", "tokens", "metrics"}
    if unknown:
        raise ConfigError(f"{where}: unknown section or key '{sorted(unknown)[0]}'")
    sections = {
        name: _build_section(cls, raw.get(name, {}), name, where) for name, cls in _SECTIONS.items()
    }
    channels_raw = raw.get("channels", {})
    if not isinstance(channels_raw, Mapping):
        raise ConfigError(f"{where}: 'channels' must be a table of [channels.<name>] sections")
    channels = {name: _build_channel(name, body, where, env) for name, body in channels_raw.items()}
    tokens_raw = raw.get("tokens", {})
    if not isinstance(tokens_raw, Mapping):
        raise ConfigError(f"{where}: 'tokens' must be a table of [tokens.<name>] sections")
    tokens = {
        name: _build_token(name, body, channels, where, env) for name, body in tokens_raw.items()
    }
    metrics = _build_metrics(raw.get("metrics", {}), where, env)
    return Settings(channels=channels, tokens=tokens, metrics=metrics, source=where, **sections)


def _build_metrics(body: Any, where: str, env: Mapping[str, str]) -> MetricsSettings:
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: [metrics] must be a table")
    unknown = set(body) - {"token"}
    if unknown:
        raise ConfigError(f"{where}: unknown key 'metrics.{sorted(unknown)[0]}'")
    if "token" not in body:
        return MetricsSettings()
    value = _resolve_env_reference(str(body["token"]), "metrics.token", where, env)
    if len(value) < 8:
        raise ConfigError(f"{where}: 'metrics.token' is too short (at least 8 characters)")
    return MetricsSettings(token=Secret(value))


def parse_size(value: Any) -> int:
    """`2GiB`, `500 MB`, `1048576` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    unit = text[len(number) :]
    if unit not in _SIZE_UNITS or not number:
        raise ValueError(value)
    return int(float(number) * _SIZE_UNITS[unit])


def _build_token(
    name: str,
    body: Any,
    channels: Mapping[str, ChannelSettings],
    where: str,
    env: Mapping[str, str],
) -> TokenSettings:
    key_base = f"tokens.{name}"
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: [{key_base}] must be a table")
    unknown = set(body) - {"token", "roles"}
    if unknown:
        raise ConfigError(f"{where}: unknown key '{key_base}.{sorted(unknown)[0]}'")
    if "token" not in body:
        raise ConfigError(f"{where}: '{key_base}.token' is required")
    value = _resolve_env_reference(str(body["token"]), f"{key_base}.token", where, env)
    if len(value) < 8:
        raise ConfigError(f"{where}: '{key_base}.token' is too short (at least 8 characters)")
    roles = body.get("roles", {})
    if not isinstance(roles, Mapping):
        raise ConfigError(f"{where}: '{key_base}.roles' must be a table of channel = role")
    for channel, role in roles.items():
        if channel != "*" and channel not in channels:
            raise ConfigError(f"{where}: '{key_base}.roles' names unknown channel '{channel}'")
        if role not in ROLES:
            raise ConfigError(f"{where}: '{key_base}.roles.{channel}' must be one of {ROLES}")
    return TokenSettings(name, Secret(value), dict(roles))


def _build_section(cls: type, body: Any, name: str, where: str) -> Any:
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: [{name}] must be a table")
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in body.items():
        if not hasattr(defaults, key):
            raise ConfigError(f"{where}: unknown key '{name}.{key}'")
        values[key] = _coerce(value, getattr(defaults, key), f"{name}.{key}", where)
    section = cls(**values)
    _check_section(section, name, where)
    return section


def _coerce(value: Any, default: Any, key: str, where: str) -> Any:
    try:
        if key.endswith(("_size", "min_free")):
            return parse_size(value)
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if isinstance(default, Path):
            return Path(str(value))
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: '{key}' must be {type(default).__name__}, got {value!r}"
        ) from None


def _check_section(section: Any, name: str, where: str) -> None:
    if isinstance(section, ServerSettings):
        if not 0 < section.port < 65536:
            raise ConfigError(f"{where}: 'server.port' must be 1-65535, got {section.port}")
        if section.workers < 1:
            raise ConfigError(f"{where}: 'server.workers' must be at least 1")
    if isinstance(section, CacheSettings):
        if section.repodata_ttl < 0:
            raise ConfigError(f"{where}: 'cache.repodata_ttl' must be >= 0")
        if section.negative_ttl < 0:
            raise ConfigError(f"{where}: 'cache.negative_ttl' must be >= 0")
    if isinstance(section, UploadSettings) and section.max_upload_size <= 0:
        raise ConfigError(f"{where}: 'uploads.max_upload_size' must be > 0")
    if isinstance(section, UpstreamSettings):
        for key in ("connect_timeout", "read_timeout"):
            if getattr(section, key) <= 0:
                raise ConfigError(f"{where}: 'upstream.{key}' must be > 0")


def _build_channel(name: str, body: Any, where: str, env: Mapping[str, str]) -> ChannelSettings:
    key_base = f"channels.{name}"
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: [{key_base}] must be a table")
    if (
        not name
        or name.startswith(("/", "api/", "t/"))
        or name in {"api", "t", "healthz"}
        or any(part in {"", ".", ".."} for part in name.split("/"))
    ):
        raise ConfigError(f"{where}: '{key_base}' is not a usable channel name")
    unknown = set(body) - _CHANNEL_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key '{key_base}.{sorted(unknown)[0]}'")
    values: dict[str, Any] = {"name": name}
    if "upstream" in body:
        upstream = str(body["upstream"]).rstrip("/")
        parts = urlsplit(upstream)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"{where}: '{key_base}.upstream' is not an http(s) URL")
        values["upstream"] = upstream
    for key in ("private", "mirror_only"):
        if key in body:
            values[key] = _coerce(body[key], False, f"{key_base}.{key}", where)
    if "allow_upstream" in body:
        names = body["allow_upstream"]
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: '{key_base}.allow_upstream' must be a list of names")
        values["allow_upstream"] = tuple(n.strip().lower() for n in names)
    if "allowed_origins" in body:
        origins = body["allowed_origins"]
        if isinstance(origins, str):
            origins = [o for o in origins.split(",") if o.strip()]
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ConfigError(f"{where}: '{key_base}.allowed_origins' must be a list of URLs")
        for origin in origins:
            parts = urlsplit(origin.strip())
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ConfigError(
                    f"{where}: '{key_base}.allowed_origins' entry {origin!r} "
                    "is not an http(s) origin"
                )
        values["allowed_origins"] = tuple(o.strip().rstrip("/") for o in origins)
    for key in _SECRET_KEYS | {"upstream_username"}:
        if key in body:
            value = _resolve_env_reference(str(body[key]), f"{key_base}.{key}", where, env)
            values[key] = Secret(value) if key in _SECRET_KEYS else value
    if values.get("mirror_only") and "upstream" not in values:
        raise ConfigError(f"{where}: '{key_base}' is mirror_only but has no upstream")
    return ChannelSettings(**values)


def _resolve_env_reference(value: str, key: str, where: str, env: Mapping[str, str]) -> str:
    """`env:NAME` takes the value from the environment, so secrets stay out of the file."""
    if not value.startswith("env:"):
        return value
    var = value[4:]
    if var not in env:
        raise ConfigError(
            f"{where}: '{key}' refers to environment variable {var}, which is not set"
        )
    return env[var]


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """CONDAPROXY_<SECTION>_<KEY> and CONDAPROXY_CHANNELS__<NAME>__<KEY> override single keys."""
    channels = raw.setdefault("channels", {})
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        rest = var[len(ENV_PREFIX) :]
        if rest.startswith("CHANNELS__"):
            parts = rest[len("CHANNELS__") :].split("__")
            if len(parts) != 2:
                continue
            env_name, key = parts
            name = _match_channel_name(env_name, channels)
            channels.setdefault(name, {})[key.lower()] = value
            continue
        section, _, key = rest.partition("_")
        if section.lower() in _SECTIONS and key:
            raw.setdefault(section.lower(), {})[key.lower()] = value


def _match_channel_name(env_name: str, channels: Mapping[str, Any]) -> str:
    def norm(name: str) -> str:
        return "".join(c if c.isalnum() else "_" for c in name).upper()

    for name in channels:
        if norm(name) == env_name.upper():
            return name
    return env_name.lower().replace("_", "-")
