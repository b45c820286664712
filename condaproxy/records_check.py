"""Pure rules: is an uploaded package's record something every conda client can read? No I/O.

An upload's `info/index.json` becomes its repodata record, served to every client of the
channel inside the merged repodata.json (JSON) and the CEP-16 shards (msgpack). One value a
client cannot decode breaks far more than that package: msgpack cannot encode an integer past
2**64 (the merged shard index answered 500), rattler decodes a shard or repodata.json with serde
and gives up on the first record it cannot read, conda builds a PackageRecord from each record.
So every field is held to what conda, mamba and rattler all accept, with bounds, and anything
else is refused with the field named. Invariant: a record that passes `check_record` encodes as
JSON and as msgpack, and parses as a rattler PackageRecord.

Known fields follow conda's PackageRecord (conda/models/records.py) and rattler's
(rattler_conda_types::PackageRecord); fields an indexer computes (md5, sha256, size) are
replaced by the proxy's own values before serving, so their uploaded values are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import rattler

from .errors import BadRequest
from .routing import SUBDIR_RE


class InvalidRecord(BadRequest):
    """A field of info/index.json that clients could not read; `field` names it."""


class _Bad(Exception):
    """Raised by one rule; `check_record` adds the field's name."""


# Bounds: far above anything conda-forge publishes, far below what hurts a client.
BUILD_NUMBER_MAX = 2**31 - 1  # conda: int; libmamba: size_t; rattler: u64
MAX_SPECS = 1024  # entries of depends / constrains / each run_exports list
MAX_SPEC_LENGTH = 1000
MAX_TEXT = 4096  # license and other free text
MAX_LIST = 256  # features, flags, purls
MAX_UNKNOWN_KEYS = 64
MAX_UNKNOWN_BYTES = 16 * 1024  # all unknown fields together, JSON-encoded
MAX_DEPTH = 4  # nesting of an unknown field's value
SAFE_INT = 2**53  # integers beyond this lose precision in JavaScript and double-based readers

# conda reads a timestamp above 253402300799 (9999-12-31 in seconds) as milliseconds and below
# it as seconds (TimestampField in conda/models/records.py); rattler does the same and refuses
# dates past 9999-12-30. Accepted: a date from 1970 to 3000, in either unit.
_SECONDS_MAX = 32_503_680_000  # 3000-01-01T00:00:00Z
_MS_MIN = 253_402_300_800
_MS_MAX = 32_503_680_000_000

_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$", re.IGNORECASE)  # rattler's PackageName
_VERSION = re.compile(r"^[A-Za-z0-9_.+!]+$")  # conda's VersionOrder alphabet; never `-`
_BUILD = re.compile(r"^[A-Za-z0-9_.+]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")  # features, flags, platform, arch
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-fA-F]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RUN_EXPORTS = ("weak", "strong", "noarch", "weak_constrains", "strong_constrains")
_NOARCH = ("python", "generic", True, False, None)  # plus conda's legacy booleans
# Keys a client reads as the package's location or identity (conda aliases `build_string`,
# `schannel`, `filename`, `extra-depends`): an upload must not redirect or rename itself.
_FORBIDDEN = frozenset(
    {"url", "fn", "filename", "channel", "schannel", "build_string", "extra-depends", "auth"}
)
# Set by an indexer over the file; the proxy computes its own.
COMPUTED = frozenset({"md5", "sha256", "size"})


def _utf8(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("holds text that is not valid UTF-8 (a lone surrogate)") from None


def _text(value: Any, max_length: int = MAX_TEXT, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, not {_kind(value)}")
    if not value:
        raise _Bad("must not be empty")
    if len(value) > max_length:
        raise _Bad(f"is longer than {max_length} characters")
    _utf8(value)
    if _CONTROL.search(value):
        raise _Bad("contains control characters")
    if pattern is not None and not pattern.match(value):
        raise _Bad(f"{_short(value)} has characters outside {pattern.pattern}")
    return value


def _optional_text(value: Any) -> None:
    if value is not None:
        _text(value)


def _identity(pattern: re.Pattern[str] | None, max_length: int) -> Callable[[Any], None]:
    """name / version / build: path characters get the message the path checks always gave."""

    def check(value: Any) -> None:
        if isinstance(value, str) and (any(c in value for c in "/\\\x00") or value in {".", ".."}):
            raise _Bad(f"{_short(value)} contains a path")
        _text(value, max_length, pattern)

    return check


_version_text = _identity(_VERSION, 128)
_subdir_text = _identity(None, 64)


def _version(value: Any) -> None:
    _version_text(value)
    try:
        rattler.Version(value)
    except Exception as exc:  # rattler's parse error: the client would refuse it the same way
        raise _Bad(f"{_short(value)} is not a version: {_first_line(exc)}") from None


def _subdir(value: Any) -> None:
    _subdir_text(value)
    if not SUBDIR_RE.match(value):
        raise _Bad(f"{_short(value)} is not a conda subdir")


def _integer(low: int, high: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"must be an integer, not {_kind(value)}")
        if not low <= value <= high:
            raise _Bad(f"{_short(value)} is out of range ({low}..{high})")

    return check


def _optional_integer(low: int, high: int) -> Callable[[Any], None]:
    check = _integer(low, high)
    return lambda value: None if value is None else check(value)


def _timestamp(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"must be an integer (milliseconds since 1970), not {_kind(value)}")
    if not (0 <= value <= _SECONDS_MAX or _MS_MIN <= value <= _MS_MAX):
        raise _Bad(f"{_short(value)} is not a date between 1970 and 3000 in ms or seconds")


def _match_spec(value: Any) -> None:
    _text(value, MAX_SPEC_LENGTH)
    if not value.isascii():
        raise _Bad(f"{_short(value)} is not ASCII")
    try:
        # Lenient, as clients parse the depends of repodata; names must be exact, not globs.
        rattler.MatchSpec(value)
    except Exception as exc:
        raise _Bad(f"{_short(value)} is not a match spec: {_first_line(exc)}") from None


def _list_of(item: Callable[[Any], Any], max_items: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, list):
            raise _Bad(f"must be a list, not {_kind(value)}")
        if len(value) > max_items:
            raise _Bad(f"has more than {max_items} entries")
        for i, entry in enumerate(value):
            try:
                item(entry)
            except _Bad as exc:
                raise _Bad(f"entry {i}: {exc}") from None

    return check


_specs = _list_of(_match_spec, MAX_SPECS)
_tokens = _list_of(lambda v: _text(v, 128, _TOKEN), MAX_LIST)


def _features(value: Any) -> None:
    """A space- or comma-separated string, or (track_features only) a list of strings."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _Bad(f"is longer than {MAX_TEXT} characters")
        for token in re.split(r"[ ,]+", value.strip()):
            if token:
                _text(token, 128, _TOKEN)
        return
    _tokens(value)


def _features_string(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _Bad(f"must be a string, not {_kind(value)}")  # rattler refuses a list here
    _features(value)


def _noarch(value: Any) -> None:
    if not any(value is v or (isinstance(v, str) and value == v) for v in _NOARCH):
        raise _Bad(f'{_short(value)} must be "python", "generic", true, false or null')


def _optional_token(value: Any) -> None:
    if value is not None:
        _text(value, 32, _TOKEN)


def _date(value: Any) -> None:
    _text(value, 64)


def _hex_digest(length: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is None:
            return
        _text(value, length)
        if len(value) != length or not _HEX.match(value):
            raise _Bad(f"must be {length} hex digits")

    return check


def _site_packages(value: Any) -> None:
    """CEP-17: a path relative to the environment's prefix, inside it."""
    if value is None:
        return
    _text(value, 1024)
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value) or ".." in parts:
        raise _Bad(f"{_short(value)} is not a relative path inside the environment")


def _run_exports(value: Any) -> None:
    if not isinstance(value, dict):
        raise _Bad(f"must be an object, not {_kind(value)}")
    for key, specs in value.items():
        if key not in _RUN_EXPORTS:
            raise _Bad(f"has key {_short(key)}; allowed: {', '.join(_RUN_EXPORTS)}")
        try:
            _specs(specs)
        except _Bad as exc:
            raise _Bad(f"{key}: {exc}") from None


def _extra_depends(value: Any) -> None:
    if not isinstance(value, dict):
        raise _Bad(f"must be an object, not {_kind(value)}")
    if len(value) > MAX_LIST:
        raise _Bad(f"has more than {MAX_LIST} entries")
    for key, specs in value.items():
        try:
            _text(key, 128, _TOKEN)
            _specs(specs)
        except _Bad as exc:
            raise _Bad(f"{_short(key)}: {exc}") from None


def _purls(value: Any) -> None:
    if value is not None:
        _list_of(lambda v: _text(v, 1024, re.compile(r"^pkg:\S+$")), MAX_LIST)(value)


_RULES: Mapping[str, Callable[[Any], None]] = {
    "name": _identity(_NAME, 128),
    "version": _version,
    "build": _identity(_BUILD, 128),
    "build_number": _integer(0, BUILD_NUMBER_MAX),
    "subdir": _subdir,
    "depends": _specs,
    "constrains": _specs,
    "run_exports": _run_exports,
    "extra_depends": _extra_depends,
    "track_features": _features,
    "features": _features_string,
    "flags": _tokens,
    "noarch": _noarch,
    "license": _optional_text,
    "license_family": _optional_text,
    "platform": _optional_token,
    "arch": _optional_token,
    "timestamp": _timestamp,
    "python_site_packages_path": _site_packages,
    "legacy_bz2_md5": _hex_digest(32),
    "legacy_bz2_size": _optional_integer(0, SAFE_INT),
    "purls": _purls,
    "preferred_env": _optional_text,
    "date": _date,
    "package_type": _optional_token,
    "md5": _hex_digest(32),
    "sha256": _hex_digest(64),
    "size": _optional_integer(0, SAFE_INT),
}
REQUIRED = ("name", "version", "build", "build_number", "subdir")


def check_record(record: Any) -> None:
    """Refuse a record any client could not read; the error names the first bad field."""
    if not isinstance(record, dict):
        raise InvalidRecord("info/index.json is not a JSON object")
    for field in REQUIRED:
        if field not in record:
            raise InvalidRecord(f"info/index.json has no valid '{field}'", field=field)
        if record[field] is None or record[field] == "":
            raise InvalidRecord(f"info/index.json has no valid '{field}'", field=field)
    unknown: dict[str, Any] = {}
    for field, value in record.items():
        _field(field, value, unknown)
    if len(unknown) > MAX_UNKNOWN_KEYS:
        raise InvalidRecord(
            f"info/index.json has more than {MAX_UNKNOWN_KEYS} fields conda does not define",
            field=sorted(unknown)[MAX_UNKNOWN_KEYS],
        )
    if len(msgspec.json.encode(unknown)) > MAX_UNKNOWN_BYTES:
        raise InvalidRecord(
            f"info/index.json fields that conda does not define "
            f"({', '.join(repr(k) for k in sorted(unknown))}) are larger than "
            f"{MAX_UNKNOWN_BYTES} bytes together",
            field=max(unknown, key=lambda k: len(msgspec.json.encode(unknown[k]))),
        )


def _field(field: Any, value: Any, unknown: dict[str, Any]) -> None:
    try:
        if field in _FORBIDDEN:
            raise _Bad("says where the package lives or what it is called; only the proxy may")
        rule = _RULES.get(field)
        if rule is not None:
            rule(value)
            return
        if not _KEY.match(field):
            raise _Bad("is not a field name conda could define ([A-Za-z_][A-Za-z0-9_.-]*)")
        _plain(value, 0)
        unknown[field] = value
    except _Bad as exc:
        name = field if isinstance(field, str) and len(field) <= 64 else _short(field)
        raise InvalidRecord(f"info/index.json field '{name}' {exc}", field=name) from None


def _plain(value: Any, depth: int) -> None:
    """A field conda does not define: any JSON value both encoders carry, bounded."""
    if depth > MAX_DEPTH:
        raise _Bad(f"nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -SAFE_INT <= value <= SAFE_INT:
            raise _Bad(f"holds the integer {_short(value)}, beyond ±2**53")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad("holds NaN or Infinity, which JSON cannot carry")
    elif isinstance(value, str):
        _utf8(value)
    elif isinstance(value, list):
        for item in value:
            _plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _utf8(key)
            _plain(item, depth + 1)
    else:
        raise _Bad(f"holds {_kind(value)}, not a JSON value")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN/Infinity"
    return {int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object"
    )


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's 4300-digit conversion limit
        return "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
