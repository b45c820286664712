"""Pure rules: conda's version order and version specs, the subset a policy needs. No I/O.

Order (conda's VersionOrder): an optional epoch `N!`, a local part after `+` compared last;
the rest split on `.` and `_` into components, each into runs of digits and letters
(`1.1.0rc1` -> [1] [1] [0 'rc' 1]); a component that starts with letters gets a leading 0.
Numbers compare as numbers and above any text except `post`; among text, `*` < `dev` < `_` <
other text (alphabetical, case-insensitive) < `post`. Missing elements count as 0, so
`1.1 == 1.1.0` and `1.1.0dev1 < 1.1.0 < 1.1.0post1`.

Specs: `1.2.3` (equal in that order), `1.2.*` / `1.2*` / `=1.2` (that prefix of components),
other globs (`*rc*`, matched on the text), `==` `!=` `>=` `<=` `>` `<` `~=`, joined by `,`
(and) and `|` (or, binds looser). Parentheses are refused.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from itertools import zip_longest

Element = tuple[int, int, str]
Components = tuple[tuple[Element, ...], ...]

_ZERO: Element = (4, 0, "")
_RUNS = re.compile(r"[0-9]+|[a-z]+|\*")
_OPS = ("==", "!=", ">=", "<=", "~=", ">", "<", "=")
_VALID = re.compile(r"^[A-Za-z0-9_.+!*]+$")


def _element(run: str) -> Element:
    if run.isdigit():
        return (4, int(run), "")
    special = {"*": 0, "dev": 1, "_": 2, "post": 5}
    return (special.get(run, 3), 0, "" if run in special else run)


def _components(text: str) -> Components:
    out = []
    for part in re.split(r"[._]", text):
        runs = [_element(r) for r in _RUNS.findall(part)]
        if not runs or runs[0][0] != 4:
            runs.insert(0, _ZERO)
        out.append(tuple(runs))
    return tuple(out)


def version_key(version: str) -> tuple[int, Components, Components]:
    """A sortable key for `version` (see module docstring)."""
    text = version.strip().lower().replace("-", "_")
    epoch, bang, rest = text.rpartition("!")
    main, _, local = rest.partition("+")
    return (int(epoch) if bang and epoch.isdigit() else 0, _components(main), _components(local))


def _cmp_components(a: Components, b: Components) -> int:
    for ca, cb in zip_longest(a, b, fillvalue=(_ZERO,)):
        for ea, eb in zip_longest(ca, cb, fillvalue=_ZERO):
            if ea != eb:
                return -1 if ea < eb else 1
    return 0


def compare(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    if ka[0] != kb[0]:
        return -1 if ka[0] < kb[0] else 1
    return _cmp_components(ka[1], kb[1]) or _cmp_components(ka[2], kb[2])


def _starts_with(version: str, prefix: str) -> bool:
    """`version` lies in the `prefix.*` range: its components begin with prefix's."""
    kv, kp = version_key(version), version_key(prefix)
    if kv[0] != kp[0] or len(kv[1]) < len(kp[1]):
        return False
    return _cmp_components(kv[1][: len(kp[1])], kp[1]) == 0


def _compatible(version: str, base: str) -> bool:
    """PEP 440-style `~=1.4.5`: >= 1.4.5 and == 1.4.*."""
    head = base.rsplit(".", 1)[0] if "." in base else base
    return compare(version, base) >= 0 and _starts_with(version, head)


Test = Callable[[str], bool]


def _atom(text: str) -> Test:
    op = next((o for o in _OPS if text.startswith(o)), "")
    value = text[len(op) :].strip()
    if not value or not _VALID.match(value):
        raise ValueError(f"version {text!r} is not a version spec")
    if op in ("", "=", "==") and value.endswith("*"):
        stem = value.rstrip("*").rstrip(".")
        if "*" not in stem and stem:
            return lambda v: _starts_with(v, stem)
        return lambda v: fnmatch.fnmatchcase(v.lower(), value.lower())
    if "*" in value:
        raise ValueError(f"version {text!r}: a glob only goes with ==, = or nothing")
    if op == "=":
        return lambda v: _starts_with(v, value)
    if op == "~=":
        return lambda v: _compatible(v, value)
    tests: dict[str, Callable[[int], bool]] = {
        "": lambda c: c == 0,
        "==": lambda c: c == 0,
        "!=": lambda c: c != 0,
        ">=": lambda c: c >= 0,
        "<=": lambda c: c <= 0,
        ">": lambda c: c > 0,
        "<": lambda c: c < 0,
    }
    check = tests[op]
    return lambda v: check(compare(v, value))


def version_matcher(spec: str) -> Test:
    """A test for versions from a conda version spec; ValueError names what is wrong."""
    text = spec.strip()
    if not text or "(" in text or ")" in text:
        raise ValueError(f"version {spec!r} is not a version spec this proxy takes")
    alternatives = []
    for branch in text.split("|"):
        atoms = [_atom(a.strip()) for a in branch.split(",")]
        alternatives.append(atoms)
    return lambda v: any(all(t(v) for t in atoms) for atoms in alternatives)
