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
from typing import Any

import msgspec

from .errors import BadRequest
from .record_claims import CLAIM_RULES, check_consistency
from .record_fields import (
    FIELD_RULES,
    FORBIDDEN_FIELDS,
    KEY_RE,
    MAX_DEPTH,
    MAX_UNKNOWN_BYTES,
    MAX_UNKNOWN_KEYS,
    SAFE_INT,
    BadField,
    check_utf8,
    kind_of,
    shown,
)


class InvalidRecord(BadRequest):
    """A field of info/index.json that clients could not read; `field` names it."""


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


def check_claims(record: dict[str, Any]) -> None:
    """For a new upload, after check_record: refuse a record claiming more than the package
    itself (record_claims.py: lower-case name, known subdir, plain dependency specs)."""
    for field, rule in CLAIM_RULES.items():
        if field in record:
            try:
                rule(record[field])
            except BadField as exc:
                raise InvalidRecord(f"info/index.json field '{field}' {exc}", field=field) from None
    conflict = check_consistency(record)
    if conflict is not None:
        field, problem = conflict
        raise InvalidRecord(f"info/index.json field '{field}' {problem}", field=field)


def _field(field: Any, value: Any, unknown: dict[str, Any]) -> None:
    try:
        if field in FORBIDDEN_FIELDS:
            raise BadField("says where the package lives or what it is called; only the proxy may")
        rule = FIELD_RULES.get(field)
        if rule is not None:
            rule(value)
            return
        if not KEY_RE.match(field):
            raise BadField("is not a field name conda could define ([A-Za-z_][A-Za-z0-9_.-]*)")
        _plain(value, 0)
        unknown[field] = value
    except BadField as exc:
        name = field if isinstance(field, str) and len(field) <= 64 else shown(field)
        raise InvalidRecord(f"info/index.json field '{name}' {exc}", field=name) from None


def _plain(value: Any, depth: int) -> None:
    """A field conda does not define: any JSON value both encoders carry, bounded."""
    if depth > MAX_DEPTH:
        raise BadField(f"nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -SAFE_INT <= value <= SAFE_INT:
            raise BadField(f"holds the integer {shown(value)}, beyond ±2**53")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadField("holds NaN or Infinity, which JSON cannot carry")
    elif isinstance(value, str):
        check_utf8(value)
    elif isinstance(value, list):
        for item in value:
            _plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_utf8(key)
            _plain(item, depth + 1)
    else:
        raise BadField(f"holds {kind_of(value)}, not a JSON value")
