"""The streamed merge decodes to exactly what the old decode-everything merge produced.

Random upstream documents, written by hand so they can hold what a serializer may emit and a
hostile upstream may add (any whitespace, escape sequences in keys and values, keys nested in
records that look like file names, "packages" inside records, duplicate keys, unknown top-level
keys, empty, missing and non-object maps), and random uploads over them: the streamed merge
and the oracle below (the implementation before the streamed merge) must agree on the decoded
document and on the order of keys, or both refuse the document.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
import pytest

from condaproxy.rules.json_search import NEAR, Doubt, closing_quote, first_token, is_escaped
from condaproxy.rules.merge import (
    BATCH,
    MAX_SEARCHES,
    _Members,
    empty_repodata,
    merge_repodata,
    merged_repodata,
    package_name,
    shadowed_names,
)
from condaproxy.rules.shadowing import hides

Record = dict[str, Any]


# The oracle: the merge as it was before it streamed (decode both maps, delete, insert, encode),
# changed on purpose for the case-insensitive rule (tests/hostile/test_shadowing.py): which
# records a local package hides is decided member by member by `hides` (rules/shadowing.py),
# from the file name and the record's `name` field, on fully decoded records; no search, no
# batch, no fast path. (main's oracle asked `_dropped` about file names alone, case-sensitively
# on the `<name>-` prefix.)


def old_merge_repodata(upstream, local, subdir, allow_upstream) -> bytes:
    top = msgspec.json.decode(upstream or empty_repodata(subdir), type=dict[str, msgspec.Raw])
    shadow = shadowed_names(local, allow_upstream)
    encoder = msgspec.json.Encoder()
    for key, ext in (("packages", ".tar.bz2"), ("packages.conda", ".conda")):
        mine = {fn: r for fn, r in local.items() if fn.endswith(ext)}
        if key not in top and not mine:
            continue
        members = msgspec.json.decode(top[key], type=dict[str, msgspec.Raw]) if key in top else {}
        for fn in list(members):
            record = msgspec.json.decode(members[fn])
            name = record.get("name") if isinstance(record, dict) else None
            if hides(fn, name, shadow, local):
                del members[fn]
        for fn, record in sorted(mine.items()):
            members[fn] = msgspec.Raw(encoder.encode(record))
        top[key] = msgspec.Raw(encoder.encode(members))
    return encoder.encode(top)


# A JSON writer with every liberty RFC 8259 allows: objects are lists of pairs (so keys can
# repeat and keep their order), whitespace anywhere between tokens, any character escaped.


class Writer:
    def __init__(
        self, rng: random.Random, escapes: float, spaces: float, ascii: bool, runs: float = 0
    ) -> None:
        self.rng, self.escapes, self.spaces, self.ascii = rng, escapes, spaces, ascii
        self.runs = runs  # how often whitespace runs longer than a bounded look (NEAR)

    def ws(self) -> str:
        if self.rng.random() > self.spaces:
            return ""
        if self.rng.random() < self.runs:
            return " " * self.rng.randrange(NEAR, 3 * NEAR)
        return self.rng.choice([" ", "\n", "\n  ", "\t", "\r\n    ", "  "])

    def string(self, s: str) -> str:
        out = []
        for c in s:
            if c in '"\\':
                out.append("\\" + c)
            elif (
                ord(c) < 0x20 or (self.ascii and ord(c) > 0x7E) or self.rng.random() < self.escapes
            ):
                out.append(self.rng.choice([f"\\u{ord(c):04x}", f"\\u{ord(c):04X}"]))
            else:
                out.append(c)
        return '"' + "".join(out) + '"'

    def value(self, v: Any) -> str:
        w = self.ws
        if isinstance(v, Huge):  # written in C: the character-by-character writer is slow
            return json.dumps(str(v), ensure_ascii=self.ascii)
        if isinstance(v, Obj):
            body = f",{w()}".join(f"{self.string(k)}{w()}:{w()}{self.value(x)}" for k, x in v)
            return f"{{{w()}{body}{w()}}}"
        if isinstance(v, list):
            return f"[{w()}" + f",{w()}".join(self.value(x) for x in v) + f"{w()}]"
        if isinstance(v, str):
            return self.string(v)
        return json.dumps(v)


class Obj(list):
    """A JSON object as (key, value) pairs."""


class Huge(str):
    """A long string value (hundreds of KB), which the writer writes with json.dumps."""


NAMES = ["ours", "ours-extra", "our", "yours", "o", "numpy", "np", "r", "r-base", "x_y", "a.b"]


def some_case(rng: random.Random, name: str) -> str:
    """`name`, mostly as it is, sometimes in another case (clients fold case)."""
    roll = rng.random()
    return name.upper() if roll < 0.05 else name.title() if roll < 0.1 else name


def filename(rng: random.Random, name: str | None = None, ext: str | None = None) -> str:
    name = name or some_case(rng, rng.choice(NAMES))
    version = rng.choice(["1.0", "2.0", "9.9", "1.0.1", "1!2.0"])
    build = rng.choice(["0", "h1_0", "py_0"])
    return f"{name}-{version}-{build}{ext or rng.choice(['.conda', '.tar.bz2'])}"


def upstream_record(rng: random.Random, fn: str) -> Obj:
    name = package_name(fn) or "odd"
    if rng.random() < 0.1:  # a `name` field that is not the file name's (an impostor)
        name = some_case(rng, rng.choice(NAMES))
    record = Obj(
        [
            ("name", name),
            ("version", "1.0"),
            ("build", "0"),
            ("build_number", rng.randrange(3)),
            ("depends", [f"{rng.choice(NAMES)} >=1", f'"{filename(rng)}": {{', "é ü"]),
        ]
    )
    if rng.random() < 0.3:
        record.append(("fn", fn))  # a value equal to a key
    if rng.random() < 0.3:  # a key nested in a record that looks like a member of the map
        record.append(("extra", Obj([(filename(rng), Obj([("name", "ours")])), ("b", 1)])))
    if rng.random() < 0.2:
        record.append(("packages", Obj([(filename(rng), Obj())])))
    if rng.random() < 0.2:
        record.append(("license", 'weird \\ "quoted" \u2028 ünïcode'))
    return record


def package_map(rng: random.Random, ext: str) -> Obj | Any:
    roll = rng.random()
    if roll < 0.03:
        return rng.choice([[], None, "x", 1])  # not an object: both merges refuse it
    members = Obj()
    for _ in range(rng.randrange(0 if roll < 0.2 else 1, 9)):
        fn = filename(rng, ext=ext if rng.random() < 0.9 else None)
        members.append((fn, upstream_record(rng, fn)))
    if members and rng.random() < 0.05:
        members.append((members[0][0], upstream_record(rng, members[0][0])))  # a duplicate
    return members


def upstream_document(rng: random.Random) -> bytes:
    pairs = [("info", Obj([("subdir", "linux-64")])), ("repodata_version", rng.choice([1, 2]))]
    for key, ext in (("packages", ".tar.bz2"), ("packages.conda", ".conda")):
        if rng.random() < 0.85:
            pairs.append((key, package_map(rng, ext)))
    if rng.random() < 0.5:
        pairs.append(("removed", [filename(rng) for _ in range(rng.randrange(3))]))
    if rng.random() < 0.3:
        whl = Obj([(filename(rng, ext=".conda"), Obj([("name", "x")]))])
        pairs.append(("v3", Obj([("whl", whl)])))
    if rng.random() < 0.2:
        pairs.append(("\u00fcnknown", Obj([("packages", Obj())])))
    rng.shuffle(pairs)
    writer = Writer(
        rng,
        escapes=rng.choice([0, 0, 0.02, 0.3]),
        spaces=rng.choice([0, 0.5, 1]),
        ascii=rng.random() < 0.5,  # as json.dumps writes by default
    )
    return (writer.ws() + writer.value(Obj(pairs)) + writer.ws()).encode()


def uploads(rng: random.Random, document: bytes) -> tuple[dict[str, Record], list[str]]:
    local: dict[str, Record] = {}
    upstream_keys = [k for k in _all_keys(document) if package_name(k)]
    for _ in range(rng.randrange(4)):
        # Sometimes the file name of an upstream one, which it replaces.
        fn = rng.choice(upstream_keys) if upstream_keys and rng.random() < 0.3 else filename(rng)
        name = package_name(fn)
        local[fn] = {"name": name, "version": "7.0", "build": "0", "build_number": 0, "up": True}
    allow = [n.upper() if rng.random() < 0.5 else n for n in NAMES if rng.random() < 0.15]
    return local, allow


def _all_keys(document: bytes) -> list[str]:
    keys: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        keys.extend(k for k, _ in pairs)
        return dict(pairs)

    json.loads(document, object_pairs_hook=hook)
    return keys


def key_order(doc: Any) -> Any:
    """The document's keys in order, down to the members of the package maps."""
    return [
        (k, list(v) if k in ("packages", "packages.conda") and isinstance(v, dict) else None)
        for k, v in doc.items()
    ]


def agrees_with_the_oracle(document: bytes, local: dict[str, Record], allow: list[str]) -> str:
    """Check the streamed merge against the oracle; return the path the merge took."""
    try:
        expected = old_merge_repodata(document, local, "linux-64", allow)
    except msgspec.ValidationError:
        with pytest.raises(msgspec.ValidationError):
            merge_repodata(document, local, "linux-64", allow)
        return "refused"
    merged = merged_repodata(document, local, "linux-64", allow)
    data = b"".join(merged.pieces())
    assert len(data) == merged.size
    got = json.loads(data)  # the standard library's strict parser agrees it is JSON
    want = msgspec.json.decode(expected)
    assert msgspec.json.decode(data) == want
    assert got == json.loads(expected)
    assert key_order(got) == key_order(want)
    decoded = any(isinstance(p, _Members) for p in merged.parts)
    return "decoded" if decoded else "spliced" if local else "nothing to splice"


Case = tuple[bytes, dict[str, Record], list[str]]


def paths_taken(seeds: int, case: Callable[[random.Random], Case]) -> dict[str, int]:
    """Check `seeds` random cases against the oracle; count the paths the merge took."""
    paths = {"spliced": 0, "decoded": 0, "refused": 0, "nothing to splice": 0}
    for seed in range(seeds):
        document, local, allow = case(random.Random(seed))
        try:
            paths[agrees_with_the_oracle(document, local, allow)] += 1
        except AssertionError as e:
            raise AssertionError(f"seed {seed}: {document[:2000]!r} {local} {allow}") from e
    return paths


def small_case(rng: random.Random) -> Case:
    document = upstream_document(rng)
    return (document, *uploads(rng, document))


def test_the_streamed_merge_decodes_to_what_the_full_decode_merge_produced():
    paths = paths_taken(3000, small_case)
    assert min(paths.values()) >= 50, paths  # every path is exercised


# Large maps: more members than one re-encoded batch (BATCH), members of hundreds of KB,
# whitespace runs past the bounded looks, keys in raw UTF-8, and sometimes more uploaded
# names than searches (MAX_SEARCHES). Fewer documents, each a few MB.

ODD_NAMES = ["\u00fcn\u00efcode", "\u65e5\u672c", "caf\u00e9-\u00e9", "\U0001f40d"]


def large_map(rng: random.Random, ext: str) -> Obj:
    members = Obj()
    for i in range(rng.randrange(BATCH - 3, 2 * BATCH + 40)):
        name = rng.choice(ODD_NAMES) if rng.random() < 0.01 else rng.choice(NAMES)
        fn = f"{name}-{i}.0-{rng.choice(['0', 'h1_0'])}{ext}"
        members.append((fn, Obj([("name", name), ("version", f"{i}.0"), ("depends", [])])))
    for _ in range(rng.randrange(1, 4)):  # huge members, anywhere in the map
        fn = filename(rng, ext=ext)
        blob = Huge(
            rng.choice(["x", "\u00e9", '"', "\\", "\u2028"]) * rng.randrange(100_000, 600_000)
        )
        record = Obj([("name", package_name(fn) or ""), ("blob", blob), ("fn", fn)])
        members.insert(rng.randrange(len(members) + 1), (fn, record))
    return members


def large_document(rng: random.Random) -> bytes:
    pairs = [("info", Obj([("subdir", "linux-64")])), ("repodata_version", 1)]
    for key, ext in (("packages", ".tar.bz2"), ("packages.conda", ".conda")):
        if rng.random() < 0.9:
            pairs.append((key, large_map(rng, ext)))
    pairs.append(("removed", [filename(rng) for _ in range(rng.randrange(5))]))
    rng.shuffle(pairs)
    writer = Writer(
        rng,
        escapes=rng.choice([0, 0, 0.01]),
        spaces=rng.choice([0, 0.2]),
        ascii=rng.random() < 0.5,
        runs=rng.choice([0, 0.001]),
    )
    return writer.value(Obj(pairs)).encode()


def large_case(rng: random.Random) -> Case:
    document = large_document(rng)
    local, allow = uploads(rng, document)
    roll = rng.random()
    if roll < 0.5:  # names upstream does not have (spliced, unless a key has an escape)
        count = rng.randrange(1, 3) if roll < 0.3 else MAX_SEARCHES + 1  # then decoded
        local = {
            f"internal{i}-1.0-0.conda": {"name": f"internal{i}", "version": "1.0"}
            for i in range(count)
        }
    return document, local, allow


def test_the_streamed_merge_agrees_with_the_oracle_on_large_maps():
    paths = paths_taken(24, large_case)
    assert paths["spliced"] >= 3 and paths["decoded"] >= 3, paths


# The cases the searches must get right, one by one.


def rec(name: str, version: str = "1.0", **extra: Any) -> Record:
    return {"name": name, "version": version, "build": "0", "build_number": 0, **extra}


def both(document: bytes, local: Mapping[str, Record], allow: Iterable[str] = ()) -> Any:
    """The merged document, after checking it against the oracle."""
    data = merge_repodata(document, local, "noarch", allow)
    expected = old_merge_repodata(document, local, "noarch", allow)
    assert msgspec.json.decode(data) == msgspec.json.decode(expected)
    assert key_order(json.loads(data)) == key_order(json.loads(expected))
    return json.loads(data)


@pytest.mark.parametrize(
    "key",
    [
        r"ours\u002d1.0-0.conda",  # the dash of the name prefix escaped
        r"\u006furs-1.0-0.conda",  # the first letter escaped
        r"ours-1.0-0\u002econda",  # a local file name, escaped after the prefix
        r"ours-1.0-0.cond\u0061",
    ],
)
def test_an_upstream_key_written_with_escapes_is_still_hidden(key):
    document = b'{"packages.conda": {"KEY": {"name": "ours"}, "zlib-1-0.conda": {}}}'
    document = document.replace(b"KEY", key.encode())
    doc = both(document, {"ours-1.0-0.conda": rec("ours", local=True)})
    assert doc["packages.conda"] == {
        "zlib-1-0.conda": {},
        "ours-1.0-0.conda": rec("ours", local=True),
    }


def test_a_file_name_key_nested_in_a_record_is_neither_cut_nor_mistaken_for_a_member():
    nested = {"ours-2.0-0.conda": {"name": "ours"}, "after": 1}
    upstream = {
        "packages.conda": {
            "evil-1.0-0.conda": rec("evil", extra=nested, packages={"ours-3.0-0.conda": {}}),
            "ours-2.0-0.conda": rec("ours", "2.0"),
        }
    }
    doc = both(msgspec.json.encode(upstream), {"ours-1.0-0.conda": rec("ours")})
    assert doc["packages.conda"]["evil-1.0-0.conda"]["extra"] == nested
    assert "ours-2.0-0.conda" not in doc["packages.conda"]


@pytest.mark.parametrize(
    "other", ["yours-1.0-0.conda", "ours-extra-1.0-0.conda", "ours_1-1-0.conda"]
)
def test_a_name_that_contains_a_local_name_is_not_hidden(other):
    upstream = {"packages.conda": {other: rec(package_name(other) or "")}}
    doc = both(msgspec.json.encode(upstream), {"ours-1.0-0.conda": rec("ours")})
    assert other in doc["packages.conda"]


@pytest.mark.parametrize("body", ["{}", "{ }", "{\n\n}", "{\t}"])
def test_local_records_go_into_an_empty_map(body):
    document = f'{{"packages.conda": {body}, "packages": {body}}}'.encode()
    doc = both(document, {"a-1-0.conda": rec("a"), "b-1-0.tar.bz2": rec("b")})
    assert list(doc["packages.conda"]) == ["a-1-0.conda"]
    assert list(doc["packages"]) == ["b-1-0.tar.bz2"]


def test_a_map_that_is_missing_is_created_after_the_other_keys():
    document = b'{"info": {"subdir": "noarch"}, "x": [1]}'
    doc = both(document, {"a-1-0.conda": rec("a")})
    assert list(doc) == ["info", "x", "packages.conda"]


def test_local_records_are_spliced_after_the_upstream_members_in_file_name_order():
    document = b'{"packages.conda": {\n  "z-1-0.conda": {"name": "z"}\n  }\n}'
    local = {"c-1-0.conda": rec("c"), "a-1-0.conda": rec("a")}
    merged = merged_repodata(document, local, "noarch", ())
    assert not any(isinstance(p, _Members) for p in merged.parts), "spliced, not decoded"
    doc = both(document, local)
    assert list(doc["packages.conda"]) == ["z-1-0.conda", "a-1-0.conda", "c-1-0.conda"]


# A hostile document must not turn a search into a Python loop over its bytes: every look is
# bounded, and past the bound the merge decodes instead (and still gets it right).


@pytest.mark.parametrize(
    "document",
    [
        b'{"packages.conda": {"ours-2-0.conda"' + b" " * (4 * NEAR) + b": {}}}",
        b'{"packages.conda": {' + b" " * (4 * NEAR) + b'"a-1-0.conda": {}}}',
        b'{"packages.conda": {"a-1-0.conda": {"x": "' + b"\\\\" * (4 * NEAR) + b'"}}}',
        b'{"packages.conda": {"a-1-0.conda": {"x": "' + b'\\"' * (4 * NEAR) + b'"}}}',
        b'{"packages.conda": {"ours-' + b"1" * (4 * NEAR) + b'-0.conda": {}}}',
    ],
    ids=["whitespace-before-colon", "whitespace-after-brace", "backslashes", "quotes", "long-key"],
)
def test_long_runs_leave_the_proof_to_decoding(document):
    both(document, {"ours-1-0.conda": rec("ours")})


def test_the_looks_stop_at_their_bound():
    with pytest.raises(Doubt):
        first_token(b"x" + b" " * (2 * NEAR) + b"}", 1)
    with pytest.raises(Doubt):
        is_escaped(b"\\" * (2 * NEAR) + b'"', 2 * NEAR)
    with pytest.raises(Doubt):
        closing_quote(b'\\"' * (2 * NEAR) + b'"', 0)
    assert first_token(b"  ", 0) == -1
    assert is_escaped(b'\\\\\\"', 3) and not is_escaped(b'\\\\"', 2)
