"""The supply-chain policy's pure rules: ages, MatchSpecs, versions and the decision."""

from __future__ import annotations

import pytest

from condaproxy.rules.ages import parse_age
from condaproxy.rules.matchspec import parse_matchspec
from condaproxy.rules.policy import ALLOW, COOLDOWN, DENY, compile_policy
from condaproxy.rules.versions import compare

DAY = 86400.0
SHA = "ab" * 32
RECORD = {
    "name": "numpy",
    "version": "1.26.0",
    "build": "py311_1",
    "build_number": 1,
    "sha256": SHA,
    "md5": "cd" * 16,
    "subdir": "linux-64",
    "fn": "numpy-1.26.0-py311_1.conda",
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("36h", 36 * 3600),
        ("7d", 7 * DAY),
        ("2w", 14 * DAY),
        ("90s", 90),
        ("15m", 900),
        ("7D", 7 * DAY),
        ("P7D", 7 * DAY),
        ("PT20S", 20),
        ("P1DT12H", 1.5 * DAY),
        ("P2W", 14 * DAY),
        ("PT1.5S", 1.5),
        ("PT1H30M", 5400),
    ],
)
def test_durations_in_every_accepted_spelling(text: str, seconds: float) -> None:
    age = parse_age(text)
    assert age.seconds == seconds and age.cutoff is None and not age.off


@pytest.mark.parametrize("text", ["0", 0, "0d", "P0D", "PT0S"])
def test_zero_means_off(text: object) -> None:
    assert parse_age(text).off


def test_rfc3339_is_an_absolute_cutoff() -> None:
    age = parse_age("2026-01-01T00:00:00Z")
    assert age.cutoff == 1767225600.0
    assert not age.holds(1767225600.0 - 1, now=2e9)
    assert age.holds(1767225600.0 + 1, now=2e9) and age.release(1767225601.0) is None
    assert parse_age("2026-01-01T01:00:00+01:00").cutoff == 1767225600.0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("7y", "unknown unit"),
        ("7", "needs a unit"),
        (7, "needs a unit"),
        ("-7d", "negative"),
        (-1, "negative"),
        ("P1M", "years and months"),
        ("P1Y", "years and months"),
        ("P", "ISO 8601"),
        ("PT", "ISO 8601"),
        ("2026-01-01T00:00:00", "not an age"),  # no offset: ambiguous
        ("2026-13-01T00:00:00Z", "RFC 3339"),
        ("soon", "not an age"),
        (True, "not an age"),
        (1.5, "not an age"),
        ("", "not an age"),
    ],
)
def test_bad_ages_are_refused_with_a_reason(text: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_age(text)


@pytest.mark.parametrize(
    ("spec", "matches"),
    [
        ("numpy", True),
        ("NumPy", True),
        ("nump*", True),
        ("scipy", False),
        ("numpy 1.26.0", True),
        ("numpy 1.26", True),  # 1.26 == 1.26.0 in conda's order
        ("numpy 1.25", False),
        ("numpy 1.26.*", True),
        ("numpy 1.26*", True),
        ("numpy 1.2.*", False),
        ("numpy=1.26", True),
        ("numpy=1.2", False),
        ("numpy==1.26.0", True),
        ("numpy==1.26.0.0", True),  # same version in conda's order
        ("numpy>=1.26", True),
        ("numpy>=1.26,<2", True),
        ("numpy<1.26", False),
        ("numpy >1.25|<1", True),
        ("numpy !=1.26.0", False),
        ("numpy ~=1.25.0", False),
        ("numpy ~=1.26.0", True),
        ("numpy 1.26.0 *_1", True),
        ("numpy 1.26.0 *_2", False),
        ("numpy 1.26.0 py311_1", True),
        ("numpy=1.26.0=py311_1", True),
        ("numpy==1.26.0=py311_*", True),
        ("numpy=1.26.0=py312_1", False),
        (f"numpy[sha256={SHA}]", True),
        (f"numpy[sha256={SHA.upper()}]", True),
        (f"numpy[sha256='{'00' * 32}']", False),
        (f"numpy[md5={'cd' * 16}]", True),
        ("numpy[build_number=1]", True),
        ("numpy[build_number=2]", False),
        ("numpy[version='>=1.26', build='py*']", True),
        ("numpy[subdir=linux-64]", True),
        ("numpy[subdir=noarch]", False),
        ("numpy[fn=numpy-1.26.0-py311_1.conda]", True),
        ("*[sha256=" + SHA + "]", True),
        ("numpy *rc*", False),
    ],
)
def test_matchspec_subset(spec: str, matches: bool) -> None:
    assert parse_matchspec(spec).matches(RECORD) is matches


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "conda-forge::numpy",
        "numpy[sha256=abc]",
        "numpy[md5=zz]",
        "numpy[colour=red]",
        "numpy[version=1",
        "numpy 1.2 build extra",
        "numpy (>=1|<2)",
        "numpy >=*",
        "numpy[build_number=one]",
        "num py$",
        "numpy[version]",
    ],
)
def test_bad_matchspecs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_matchspec(spec)


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("0.4.1.rc", "0.4.1"),
        ("0.4.1", "0.4.2"),
        ("1.1a1", "1.1.0dev1"),
        ("1.1.0dev1", "1.1.0a1"),
        ("1.1.0rc1", "1.1.0"),
        ("1.1.0", "1.1.0post1"),
        ("1.9", "1.10"),
        ("2.0", "1!0.1"),
        ("1.0+a", "1.0+b"),
        ("1.0_1", "1.0_2"),
    ],
)
def test_conda_version_order(low: str, high: str) -> None:
    assert compare(low, high) < 0 and compare(high, low) > 0
    assert compare(low, low) == 0


def _policy(**given: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = {
        "cooldown": "7d",
        "deny": (),
        "allow": (),
        "exempt": {},
        "channels": {},
    }
    return compile_policy(**{**base, **given})  # type: ignore[arg-type]


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("given", "published", "expected"),
    [
        ({}, NOW - 8 * DAY, None),
        ({}, NOW - 6 * DAY, (COOLDOWN, "policy.cooldown = 7d", NOW + DAY)),
        ({"channels": {"cf": "3d"}}, NOW - 4 * DAY, None),
        ({"channels": {"cf": "10d"}}, NOW - 8 * DAY, (COOLDOWN, None, NOW + 2 * DAY)),
        ({"exempt": {"numpy": "0"}}, NOW, None),
        ({"exempt": {"numpy": "0"}, "channels": {"cf": "10d"}}, NOW, None),  # exemption first
        ({"exempt": {"numpy >=1.26": "1d"}}, NOW - 2 * DAY, None),
        ({"exempt": {"numpy >=1.26": "30d"}}, NOW - 8 * DAY, (COOLDOWN, None, NOW + 22 * DAY)),
        ({"exempt": {"scipy": "0"}}, NOW, (COOLDOWN, "policy.cooldown = 7d", NOW + 7 * DAY)),
        ({"deny": ["numpy"]}, NOW - 100 * DAY, (DENY, "numpy", None)),
        ({"deny": ["numpy"], "exempt": {"numpy": "0"}}, NOW, (DENY, "numpy", None)),
        ({"allow": ["scipy"]}, NOW - 100 * DAY, (ALLOW, None, None)),
        ({"allow": ["numpy"], "cooldown": 0}, NOW, None),
        ({"cooldown": "2026-01-01T00:00:00Z"}, NOW, (COOLDOWN, None, None)),
        ({"cooldown": "2026-01-01T00:00:00Z"}, 1767225600.0, None),
    ],
)
def test_decision_order_deny_allow_exemption_channel_global(
    given: dict[str, object], published: float, expected: tuple[str, str | None, float | None]
) -> None:
    verdict = _policy(**given).decide("cf", RECORD, published, NOW)
    if expected is None:
        assert verdict is None
        return
    assert verdict is not None
    kind, rule, release = expected
    assert verdict.kind == kind
    assert rule is None or verdict.rule == rule
    assert verdict.release == release


def test_uploads_meet_deny_rules_but_no_cooldown() -> None:
    policy = _policy(deny=["numpy 1.26.0 *_1"])
    assert policy.decide("cf", RECORD, NOW, NOW, local=True) is not None
    assert _policy().decide("cf", RECORD, NOW, NOW, local=True) is None


def test_an_inactive_policy_is_recognised_so_nothing_changes() -> None:
    assert not _policy(cooldown=0).active("cf")
    assert _policy(cooldown=0, channels={"cf": "1d"}).active("cf")
    assert not _policy(cooldown=0, channels={"cf": "1d"}).active("other")
    assert _policy(cooldown=0, deny=["x"]).active("other")
    assert _policy(cooldown=0, exempt={"x": "1d"}).active("other")


def test_policy_digest_moves_with_the_rules() -> None:
    assert _policy().digest("cf") == _policy().digest("cf")
    assert _policy().digest("cf") != _policy(cooldown="8d").digest("cf")
    assert _policy().digest("cf") != _policy(deny=["x"]).digest("cf")


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ({"cooldown": "7y"}, "'policy.cooldown'"),
        ({"deny": ["conda-forge::x"]}, "'policy.deny'"),
        ({"allow": ["x[bad=1]"]}, "'policy.allow'"),
        ({"exempt": {"python 3.13.*": "-1d"}}, "'policy.exempt.\"python 3.13.*\"'"),
        ({"exempt": {"x[": "1d"}}, "'policy.exempt'"),
        ({"channels": {"cf": "soon"}}, "'channels.cf.cooldown'"),
    ],
)
def test_bad_policy_names_the_key(given: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace("*", r"\*").replace(".", r"\.")):
        _policy(**given)
