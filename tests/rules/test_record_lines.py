"""Record lines (rules/record_lines) answer every lookup exactly as reading the whole JSON does
(rules/records.find_record, which reads as a conda client does), for documents an upstream
could send to mislead: the same file in both maps, duplicate keys, values that are no object,
records naming other files inside them, maps that are no object, escapes. And a map of lines
changed on disk is an error, never another file's record."""

from __future__ import annotations

import random

import msgspec
import pytest

from condaproxy.rules.record_lines import FIELDS, encode_records, find_needed
from condaproxy.rules.records import find_record
from condaproxy.rules.sorted_lines import encode_lines, find_value

SHA = "ab" * 32

DOCUMENTS = {
    "both maps": b'{"packages": {"a-1-0.tar.bz2": {"name": "a", "sha256": "%s", "size": 1},'
    b' "b-1-0.conda": {"name": "wrong"}},'
    b' "packages.conda": {"b-1-0.conda": {"name": "b", "md5": "%s"},'
    b' "a-1-0.tar.bz2": {"name": "wrong"}}}' % (SHA.encode(), b"cd" * 16),
    "only the other map": b'{"packages": {"c-1-0.conda": {"name": "c", "size": 5}},'
    b' "packages.conda": {"d-1-0.tar.bz2": {"name": "d"}}}',
    "duplicates": b'{"packages.conda": {"e-1-0.conda": {"name": "first"},'
    b' "e-1-0.conda": {"name": "e", "sha256": "x", "sha256": "last"}}}',
    "no object": b'{"packages.conda": {"f-1-0.conda": [1, 2], "g-1-0.conda": "s",'
    b' "h-1-0.conda": null}, "packages": {"f-1-0.conda": {"name": "f"}}}',
    "nested lookalike": b'{"info": {"a-1-0.conda": {"name": "evil"}}, "packages.conda":'
    b' {"x-1-0.conda": {"name": "x", "extra": {"a-1-0.conda": {"sha256": "evil"}}}}}',
    "map no object": b'{"packages": [], "packages.conda": {"a-1-0.conda": {"name": "a"}}}',
    "escapes": b'{"packages.conda": {"a\\u002d1-0.conda": {"name": "\\u0061",'
    b' "sha256": "\\u0041"}}}',
    "odd types": b'{"packages.conda": {"a-1-0.conda": {"name": 5, "size": "big",'
    b' "sha256": true, "md5": {"x": 1}}}}',
    "not a package name": b'{"packages.conda": {"a\\tb-1-0.conda": {"name": "t"},'
    b' "../x-1-0.conda": {"name": "u"}, "\\u00e9-1-0.conda": {"name": "v"}}}',
    "empty": b"{}",
}
NAMES = [
    "a-1-0.tar.bz2", "a-1-0.conda", "b-1-0.conda", "b-1-0.tar.bz2", "c-1-0.conda",
    "d-1-0.tar.bz2", "d-1-0.conda", "e-1-0.conda", "f-1-0.conda", "g-1-0.conda",
    "h-1-0.conda", "x-1-0.conda", "nothing-1-0.conda",
]  # fmt: skip


def needed(record: dict[str, object] | None) -> dict[str, object] | None:
    if record is None:
        return None
    return {key: value for key, value in record.items() if key in FIELDS}


@pytest.mark.parametrize("document", list(DOCUMENTS.values()), ids=list(DOCUMENTS))
def test_every_lookup_answers_as_the_whole_document_does(document: bytes) -> None:
    lines = encode_records(document)
    for name in NAMES:
        assert find_needed(lines, name) == needed(find_record(document, name)), name


def test_a_document_that_is_no_object_is_refused() -> None:
    for document in (b"[]", b"{", b"null"):
        with pytest.raises(msgspec.DecodeError):
            encode_records(document)


def test_many_records_all_found_by_bisection() -> None:
    rng = random.Random(7)
    records = {
        f"p{rng.randrange(10**6)}-{i}.{rng.randrange(99)}-h{i}_0.conda": {
            "name": f"p{i}", "sha256": f"{i:064x}", "size": i, "depends": ["x"] * (i % 5),
        }
        for i in range(3000)
    }  # fmt: skip
    document = msgspec.json.encode({"packages.conda": records})
    lines = encode_records(document)
    for filename, record in records.items():
        assert find_needed(lines, filename) == needed(record)
    assert find_needed(lines, "p-0-0.conda") is None
    assert find_needed(lines, "zzz-1-0.conda") is None


@pytest.mark.parametrize("cut", [1, 7, 40, 0.5, -1, -30])
def test_lines_changed_on_disk_are_an_error_never_another_files_record(cut: float) -> None:
    records = {f"k{i:05d}-1-0.conda": {"name": f"v{i}", "size": i} for i in range(500)}
    lines = encode_records(msgspec.json.encode({"packages.conda": records}))
    at = int(len(lines) * cut) if isinstance(cut, float) else cut % len(lines)
    for damaged in (lines[:at], lines[:at] + b"\0" * 9 + lines[at + 9 :], lines[at:]):
        for filename, record in list(records.items())[::37]:
            try:
                found = find_needed(damaged, filename)
            except ValueError:
                continue
            assert found in (record, None), (filename, found)


def test_keys_sort_as_whole_lines_do() -> None:
    """A key that is a prefix of another sorts first (no key byte is below the tab)."""
    pairs = [(b"a-1", b"2"), (b"a", b"1"), (b"a-1-0", b"3"), (b"b", b"4")]
    lines = encode_lines(pairs)
    assert [find_value(lines, key) for key, _ in pairs] == [b"2", b"1", b"3", b"4"]
