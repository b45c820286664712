"""A shard index's name map as sorted lines, searched without decoding (rules/shard_names):
every name it holds is found with its digest, no other name is, whatever names the upstream
sends, and lines that are not ours find nothing or raise ValueError, never a wrong digest."""

from __future__ import annotations

import hashlib
import mmap
import random
import string

import pytest

from condaproxy.rules.shard_names import encode_names, find_digest


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + string.digits + "_.-+"
    out = {
        rng.choice(string.ascii_lowercase) + "".join(rng.choices(alphabet, k=rng.randint(0, 30)))
        for _ in range(n)
    }
    return sorted(out)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 1000, 25_000])
def test_every_name_is_found_and_no_other(n: int) -> None:
    held = names(n, n)
    lines = encode_names({name: digest(name) for name in held})
    for name in held:
        assert find_digest(lines, name) == digest(name)
    for absent in ("", "0", "zzzzzzzzzzzzzzzz", "a" * 40, held[0] + "x" if held else "x"):
        if absent not in held:
            assert find_digest(lines, absent) is None


def test_it_searches_an_mmap_as_it_searches_bytes(tmp_path) -> None:
    held = names(5000, 7)
    path = tmp_path / "names"
    path.write_bytes(encode_names({name: digest(name) for name in held}))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as lines:
        for name in held[::97]:
            assert find_digest(lines, name) == digest(name)
        assert find_digest(lines, "not-there-at-all") is None


def test_names_no_package_file_can_carry_are_left_out() -> None:
    hostile = {
        "ok": digest("ok"),
        "a\nb": digest("x"),
        "tab\tname": digest("y"),
        "": digest("z"),
        "sp ace": digest("s"),
        "é": digest("e"),
    }
    lines = encode_names(hostile)
    assert lines.count(b"\n") == 1
    assert find_digest(lines, "ok") == digest("ok")
    for name in ("a", "b", "tab", "sp ace", "é", "a\nb"):
        assert find_digest(lines, name) is None


def test_a_name_that_is_a_prefix_of_another_is_told_apart() -> None:
    shards = {
        "py": digest("py"),
        "py-lib": digest("py-lib"),
        "pyarrow": digest("pyarrow"),
        "python": digest("python"),
    }
    lines = encode_names(shards)
    for name, value in shards.items():
        assert find_digest(lines, name) == value
    assert find_digest(lines, "pyth") is None


@pytest.mark.parametrize(
    "junk", [b"", b"\x00" * 500, b"no tabs here\n" * 30, b"a\tnothex" + b"z" * 60 + b"\n"]
)
def test_lines_that_are_not_ours_find_nothing_or_raise(junk: bytes) -> None:
    try:
        found = find_digest(junk, "a")
    except ValueError:  # the caller drops such a copy
        found = None
    assert found is None
