"""Pure rules for reading configuration: where each value came from (the file, or which
environment variable), environment text parsed by the kind of field it sets (one parser per
kind, in values.py), and msgspec's errors retold in the config's own words. No I/O: the
environment arrives as a mapping."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from .redact import mask_urls
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


class FromEnv(msgspec.Struct, frozen=True):
    """A value that came from the environment as text: parsed leniently, reported by source."""

    text: str
    origin: str  # e.g. "environment variable CONDAPROXY_CACHE_MAX_SIZE"
    # Read through an `env:` reference, the way to keep a secret out of the file: its value
    # is never quoted in an error, whichever key it was given to (shown_value).
    referenced: bool = False


def convert(body: Any, cls: type[Any], key: str, where: str, **fixed: Any) -> Any:
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table")
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f.type for f in info.fields}
    values = dict(fixed)
    for name, value in body.items():
        if name not in fields or name in fixed:
            raise ConfigError(f"{where}: unknown key '{key}.{name}'{_origin(value)}")
        values[name] = prepare(value, fields[name], f"{key}.{name}", where)
    try:
        return msgspec.convert(values, cls, dec_hook=_decode_custom)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, key, values, body, where)) from None


def prepare(value: Any, kind: Any, key: str, where: str) -> Any:
    """Environment text parsed by the field's kind; sizes parsed from either source."""
    try:
        if isinstance(value, FromEnv):
            value = _from_text(value.text, kind)
        elif _is_size(kind):
            return parse_size(value)
        if isinstance(value, str):
            _check_text(value, _unwrap(kind))
        return value
    except ValueError as exc:
        raise ConfigError(f"{where}: '{key}' {exc}{_origin(value)}") from None


SECRET = "***"


def without_values(message: str, values: Iterable[str]) -> str:
    """`message` with every value read through an `env:` reference masked, whole or in the
    comma-separated pieces a list or table is read from: such a value is never quoted in an
    error, whichever key it was given to (`private = "env:UPLOAD_TOKEN"`, a slip). Pieces
    under 4 characters (`1`, `yes`) hold no secret and are left, so the message stays
    readable."""
    pieces = {p.strip() for v in values for p in (v, *v.split(","), *v.split("="))}
    for piece in sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True):
        message = message.replace(piece, SECRET)
    return message


def shown_value(value: Any) -> Any:
    """A value as a config error may quote it (repr'd by the caller): URL credentials
    (userinfo, a `/t/<token>/` path, a query) masked in every text it holds, and a text the
    masking cannot read with certainty (spaces or control characters end a URL for it) or
    that came through an `env:` reference not shown at all."""
    if isinstance(value, FromEnv):
        return SECRET if value.referenced else shown_value(value.text)
    if isinstance(value, str):
        if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in value):
            return SECRET
        return mask_urls(value)
    if isinstance(value, Mapping):
        return {k: shown_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown_value(v) for v in value]
    return value


def _check_text(text: str, kind: Any) -> None:
    """Text that names something (a host, a path, a credential) is taken as written, so
    what cannot be meant is refused: spaces or a newline around it (a secret read from a file
    often ends in one, and would then never match or be sent broken), and an empty path (the
    current directory) or credential (sent as a blank one)."""
    named = isinstance(kind, msgspec.inspect.StrType) or (
        isinstance(kind, msgspec.inspect.CustomType) and kind.cls in (Path, Secret)
    )
    if not named:
        return
    if text != text.strip():
        raise ValueError("has spaces or a newline around it")
    if not text and isinstance(kind, msgspec.inspect.CustomType):
        raise ValueError("is empty")


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
        if text.lstrip().startswith("["):  # a TOML array: items may hold commas (match specs)
            return _toml_array(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(kind, msgspec.inspect.DictType):
        pairs = [item.partition("=") for item in text.split(",") if item.strip()]
        return {k.strip(): v.strip() for k, _, v in pairs}
    return text


def _toml_array(text: str) -> list[Any]:
    """`["numpy >=1.2,<2", "evil"]` from the environment, as the file would say it."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not a TOML array ({exc}): {text!r}") from None
    except RecursionError:  # tomllib recurses into nested arrays
        raise ValueError("not a TOML array: nested too deeply") from None
    if not isinstance(value, list):
        raise ValueError(f"not a TOML array: {text!r}")
    return value


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


_SECRET_FIELDS = frozenset(
    {"token", "upstream_token", "upstream_password", "upstream_bearer"}
    | {"access_key_id", "secret_access_key", "redis_url", "peer_token"}
)
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
    given = body.get(field)
    if field in _SECRET_FIELDS or (isinstance(given, FromEnv) and given.referenced):
        shown: Any = SECRET
    else:
        shown = shown_value(values.get(field, ""))
    what = re.sub(r", got `[^`]*`", "", what).replace("Expected", "must be").replace("`", "")
    full = f"{key}.{field}" if field else key
    return f"{where}: '{full}' {what}, got {shown!r}{_origin(body.get(field))}"


def _origin(value: Any) -> str:
    return f" (from {value.origin})" if isinstance(value, FromEnv) else ""


def env_references(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value.startswith("env:"):
        yield value[4:]
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from env_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from env_references(item)


def resolve_references(value: Any, key: str, where: str, env: Mapping[str, str]) -> Any:
    """`env:NAME` takes the value from the environment, so secrets stay out of the file."""
    if isinstance(value, str) and value.startswith("env:"):
        var = value[4:]
        if var not in env:
            raise ConfigError(
                f"{where}: '{key}' refers to environment variable {var}, which is not set"
            )
        return FromEnv(env[var], f"environment variable {var}", referenced=True)
    if isinstance(value, Mapping):
        return {
            k: resolve_references(v, f"{key}.{k}" if key else k, where, env)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_references(v, key, where, env) for v in value]
    return value


def apply_env_overrides(
    raw: dict[str, Any],
    env: Mapping[str, str],
    referenced: set[str],
    where: str,
    sections: Collection[str],
) -> None:
    """CONDAPROXY_<SECTION>_<KEY>, CONDAPROXY_CHANNELS__<NAME>__<KEY> and
    CONDAPROXY_TOKENS__<NAME>__<KEY> override single keys. Any other CONDAPROXY_* variable
    (a typo) is an error, unless the file refers to it with `env:`."""
    for kind in ("channels", "tokens"):
        entries = raw.get(kind)
        if isinstance(entries, Mapping):
            check_distinct_names(kind, entries, where)
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var in {CONFIG_ENV, *CLIENT_ENV} or var in referenced:
            continue
        rest = var[len(ENV_PREFIX) :]
        given = FromEnv(value, f"environment variable {var}")
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
        section = next((s for s in sections if rest.lower().startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                f"{where}: environment variable {var} names no config section "
                f"({', '.join(sorted(sections))}, channels, tokens)"
            )
        raw.setdefault(section, {})[rest[len(section) + 1 :].lower()] = given


def _env_form(name: str) -> str:
    """How the environment spells a channel or token name: CONDAPROXY_CHANNELS__<this>__KEY."""
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def check_distinct_names(table: str, names: Collection[str], where: str) -> None:
    """Two channels (or tokens) whose names differ only in case or punctuation (`cf` and `CF`,
    `conda-forge` and `conda_forge`) are one name to the environment: an override meant for one
    would silently set the other (`..._PRIVATE=true` leaving the intended channel public). And
    one is a typo of the other more often than not. Refused, naming both."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(_env_form(name), name)
        if other != name:
            env = f"{ENV_PREFIX}{table.upper()}__{_env_form(name)}__<KEY>"
            raise ConfigError(
                f"{where}: '{table}.{other}' and '{table}.{name}' differ only in case or "
                f"punctuation: the environment cannot tell them apart ({env}); rename one"
            )


def _match_name(env_name: str, entries: Mapping[str, Any], channel: bool) -> str:
    for name in entries:
        if _env_form(name) == env_name.upper():
            return name
    return env_name.lower().replace("_", "-") if channel else env_name.lower()
