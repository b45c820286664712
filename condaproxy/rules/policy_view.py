"""Pure rules: a repodata document as a policy lets clients see it (issue 13). No I/O.

Publish times (CEP 47's `indexed_timestamp`, Unix milliseconds) are the proxy's own:
- the first time a channel's subdir is seen (`known` is None), every record takes the upstream's
  `indexed_timestamp`, else its build `timestamp` clamped to now, else 0 (the backfill that
  conda-index and rattler-index use), so turning a policy on does not hold a whole channel;
- afterwards a file name the proxy has not seen before is first seen now; a build `timestamp`
  (set by whoever built the package, so backdatable) never shortens a hold.
A record is published at max(first seen, upstream `indexed_timestamp`).

Every served record carries `indexed_timestamp` (the upstream's, or the publish time), so
clients' own `exclude-newer` works on the same time. Held and denied records are cut out; the
rest of the document is untouched (records stay undecoded bytes, like rules/merge.py).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .codecs import decode_json
from .policy import Policy, Verdict

_MAPS = ("packages", "packages.conda")


class _Fields(msgspec.Struct):
    """What the policy reads of a record; anything else stays in the record's bytes."""

    name: Any = ""
    version: Any = ""
    build: Any = ""
    build_number: Any = 0
    sha256: Any = None
    md5: Any = None
    subdir: Any = None
    timestamp: Any = None
    indexed_timestamp: Any = None


_DECODE = msgspec.json.Decoder(_Fields)


def _ms(value: Any) -> int | None:
    """A record timestamp in ms (old indexes wrote seconds), or None if not a time."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if value < 0:
        return None
    return int(value * 1000 if value < 1e11 else value)


def backfill_time(fields: _Fields, now_ms: int) -> int:
    """A record present at a channel's first sync: its upstream indexed time, else its build
    time clamped to now, else 0."""
    indexed = _ms(fields.indexed_timestamp)
    if indexed is not None:
        return indexed
    built = _ms(fields.timestamp)
    return min(built, now_ms) if built is not None else 0


@dataclass
class Filtered:
    document: bytes
    first_seen: dict[str, int]
    held: dict[str, tuple[str, str, float | None]] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)
    next_release: float | None = None  # the earliest time a held record is released


def _as_record(fields: _Fields, filename: str, subdir: str) -> dict[str, Any]:
    return {
        "name": str(fields.name),
        "version": str(fields.version),
        "build": str(fields.build),
        "build_number": fields.build_number,
        "sha256": fields.sha256,
        "md5": fields.md5,
        "subdir": fields.subdir or subdir,
        "fn": filename,
    }


def _with_indexed(raw: bytes, published_ms: int) -> bytes:
    body = raw.rstrip()
    if body[:1] != b"{" or body[-1:] != b"}":
        return raw
    inner = body[1:-1].strip()
    stamp = b'"indexed_timestamp":%d' % published_ms
    return b"{" + stamp + b"}" if not inner else body[:-1] + b"," + stamp + b"}"


def filter_repodata(
    document: bytes | memoryview,
    known: Mapping[str, int] | None,
    policy: Policy,
    channel: str,
    subdir: str,
    now: float,
    local: Collection[str] = (),
) -> Filtered:
    """`document` as clients of `channel` may see it at `now` (seconds); `known` is the
    first-seen map so far (None: first sync); `local` names uploaded files (no cooldown)."""
    now_ms = int(now * 1000)
    top = decode_json(document, dict[str, msgspec.Raw])
    first_seen = dict(known or {})
    out = Filtered(b"", first_seen)
    encoder = msgspec.json.Encoder()
    for key in _MAPS:
        if key not in top:
            continue
        members = decode_json(top[key], dict[str, msgspec.Raw])
        kept: dict[str, msgspec.Raw] = {}
        for filename, raw in members.items():
            try:
                fields = _DECODE.decode(raw)
            except msgspec.DecodeError:
                fields = _Fields()
            seen = first_seen.get(filename)
            if seen is None:
                seen = backfill_time(fields, now_ms) if known is None else now_ms
                first_seen[filename] = seen
            upstream_indexed = _ms(fields.indexed_timestamp)
            published_ms = max(seen, upstream_indexed or 0)
            record = _as_record(fields, filename, subdir)
            verdict = policy.decide(
                channel, record, published_ms / 1000, now, local=filename in local
            )
            if verdict is not None:
                out.held[filename] = (verdict.kind, verdict.rule, verdict.release)
                if verdict.release is not None and (
                    out.next_release is None or verdict.release < out.next_release
                ):
                    out.next_release = verdict.release
                continue
            out.served.append(filename)
            bytes_ = bytes(raw)
            kept[filename] = (
                raw if upstream_indexed is not None else msgspec.Raw(_with_indexed(bytes_, seen))
            )
        top[key] = msgspec.Raw(encoder.encode(kept))
    if known is None:
        for name in _removed(top):
            first_seen.setdefault(name, 0)
    out.document = encoder.encode(top)
    return out


def _removed(top: Mapping[str, msgspec.Raw]) -> list[str]:
    if "removed" not in top:
        return []
    try:
        names = decode_json(top["removed"])
    except msgspec.DecodeError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def verdict_of(entry: tuple[str, str, float | None]) -> Verdict:
    return Verdict(*entry)
