"""Pure rules of the supply-chain policy (issue 13): which records a client may see. No I/O.

For one record of one channel, in this order:
1. `deny`: a record matching any deny spec is never served (uploads included).
2. `allow`: when the list is not empty, a record matching none of its specs is never served.
3. cooldown (not for uploads): the record's age is taken from the first exemption whose spec
   matches it, else the channel's `cooldown`, else `[policy] cooldown` (exemption > channel >
   global); it is held while younger than that age (or, for an RFC 3339 cutoff, when published
   after it).

"Published" is the time the caller trusts (first seen upstream by the proxy, or the upstream's
`indexed_timestamp` when later: publish_times.py), never the build `timestamp` alone, which
whoever built the package may backdate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .ages import OFF, Age, parse_age
from .errors import ProxyError
from .matchspec import MatchSpec, parse_matchspec

DENY, ALLOW, COOLDOWN = "deny", "allow", "cooldown"  # rule kinds: bounded metric labels
VIEW = "view"  # a shard the policy's own index does not name


@dataclass(frozen=True)
class Verdict:
    """Why a record is not served: the rule kind, the rule as configured, and for a cooldown
    the release time (epoch seconds; None: held until the configuration changes)."""

    kind: str
    rule: str
    release: float | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.kind, "spec": self.rule}
        if self.kind == COOLDOWN:
            out["released_at"] = None if self.release is None else iso_time(self.release)
        return out


def iso_time(epoch: float) -> str:
    """RFC 3339 UTC, to the second."""
    import datetime as _dt

    moment = _dt.datetime.fromtimestamp(math.ceil(epoch), tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Policy:
    cooldown: Age = OFF
    deny: tuple[MatchSpec, ...] = ()
    allow: tuple[MatchSpec, ...] = ()
    exempt: tuple[tuple[MatchSpec, Age], ...] = ()
    channels: Mapping[str, Age] = field(default_factory=dict)
    # compile_policy's arguments: how the worker process rebuilds this (specs hold closures)
    config: tuple[Any, ...] = field(default=(), compare=False)

    def active(self, channel: str) -> bool:
        """Whether any rule can hide a record of `channel`: when False, nothing changes."""
        age = self.channels.get(channel, self.cooldown)
        exempt = any(not a.off for _, a in self.exempt)
        return bool(self.deny or self.allow or not age.off or exempt)

    def age_for(self, channel: str, record: Mapping[str, Any]) -> tuple[Age, str]:
        """The age that applies and the config key it comes from."""
        for spec, age in self.exempt:
            if spec.matches(record):
                return age, f'policy.exempt."{spec.text}"'
        if channel in self.channels:
            return self.channels[channel], f"channels.{channel}.cooldown"
        return self.cooldown, "policy.cooldown"

    def decide(
        self,
        channel: str,
        record: Mapping[str, Any],
        published: float,
        now: float,
        local: bool = False,
    ) -> Verdict | None:
        """None if `record` is served; else the rule that hides it."""
        for spec in self.deny:
            if spec.matches(record):
                return Verdict(DENY, spec.text)
        if self.allow and not any(spec.matches(record) for spec in self.allow):
            return Verdict(ALLOW, "matches no policy.allow spec")
        if local:
            return None  # uploads are the operator's own: no cooldown
        age, key = self.age_for(channel, record)
        if age.off or not age.holds(published, now):
            return None
        return Verdict(COOLDOWN, f"{key} = {age.text}", age.release(published))

    def digest(self, channel: str) -> str:
        """Names this channel's policy: a view built under another policy is rebuilt."""
        parts = [
            f"cooldown={self.channels.get(channel, self.cooldown).text}",
            *(f"deny={s.text}" for s in self.deny),
            *(f"allow={s.text}" for s in self.allow),
            *(f"exempt={s.text}={a.text}" for s, a in self.exempt),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def public(self) -> dict[str, Any]:
        return {
            "cooldown": self.cooldown.text,
            "deny": [s.text for s in self.deny],
            "allow": [s.text for s in self.allow],
            "exempt": {s.text: a.text for s, a in self.exempt},
            "channels": {name: {"cooldown": age.text} for name, age in self.channels.items()},
        }


def compile_policy(
    cooldown: object,
    deny: list[str] | tuple[str, ...],
    allow: list[str] | tuple[str, ...],
    exempt: Mapping[str, object],
    channels: Mapping[str, object],
) -> Policy:
    """A Policy from config values; ValueError("<key>: <what is wrong>") names the key."""

    def age(key: str, value: object) -> Age:
        try:
            return parse_age(value)
        except ValueError as exc:
            raise ValueError(f"'{key}' {exc}") from None

    def spec(key: str, text: object) -> MatchSpec:
        try:
            return parse_matchspec(text)
        except ValueError as exc:
            raise ValueError(f"'{key}' entry {exc}") from None

    return Policy(
        config=(cooldown, tuple(deny), tuple(allow), dict(exempt), dict(channels)),
        cooldown=age("policy.cooldown", cooldown),
        deny=tuple(spec("policy.deny", t) for t in deny),
        allow=tuple(spec("policy.allow", t) for t in allow),
        exempt=tuple(
            (spec("policy.exempt", k), age(f'policy.exempt."{k}"', v)) for k, v in exempt.items()
        ),
        channels={
            name: age(f"channels.{name}.cooldown", value)
            for name, value in channels.items()
            if value is not None
        },
    )


class PolicyRefused(ProxyError):
    """403: a file the supply-chain policy holds back or denies; the body names the rule and,
    for a cooldown, when the file is released."""

    status = 403

    def __init__(self, filename: str, verdict: Verdict) -> None:
        reason = {
            DENY: "is denied by policy.deny",
            ALLOW: "matches no policy.allow spec",
            COOLDOWN: "is held by the cooldown",
            VIEW: "is not part of the policy's view",
        }[verdict.kind]
        when = ""
        if verdict.kind == COOLDOWN:
            release = verdict.public()["released_at"]
            when = f" until {release}" if release else " (published after the cutoff)"
        super().__init__(f"{filename} {reason} ({verdict.rule}){when}", **verdict.public())
        self.verdict = verdict
