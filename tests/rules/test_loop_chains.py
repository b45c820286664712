"""rules/loops.py: the hops header is hostile input (bounded before it is split, unreadable
tokens dropped), a hop names neither the proxy nor the channel, and only a hop already on the
chain is a cycle."""

from __future__ import annotations

import pytest

from condaproxy.rules.loops import (
    MAX_HEADER_CHARS,
    MAX_HOPS,
    LoopDetected,
    check_hop,
    extended,
    format_chain,
    hop,
    parse_chain,
)

T = [f"{i:016x}" for i in range(40)]


@pytest.mark.parametrize(
    ("value", "chain"),
    [
        (None, ()),
        ("", ()),
        (T[0], (T[0],)),
        (f" {T[0]} ,{T[1].upper()},", (T[0], T[1])),  # spaces, case, an empty item
        (f"{T[0]},garbage,{T[0]}x,../..,%00,é", (T[0],)),  # unreadable: dropped
        (",".join(T[:MAX_HOPS]), tuple(T[:MAX_HOPS])),  # up to the bound
    ],
)
def test_a_chain_is_read_and_its_garbage_dropped(value, chain):
    assert parse_chain(value) == chain


@pytest.mark.parametrize(
    "value",
    [
        ",".join(T[: MAX_HOPS + 1]),
        ",".join(T),
        "," * (MAX_HEADER_CHARS + 1),
        "x" * 1_000_000,
    ],
    ids=["one-too-many", "many", "commas", "huge"],
)
def test_a_chain_past_the_bound_is_refused_as_a_loop(value):
    with pytest.raises(LoopDetected) as raised:
        parse_chain(value)
    assert raised.value.status == 508
    assert len(raised.value.message) < 200  # the header is never echoed back


def test_a_hop_is_opaque_and_keyed():
    a = hop("secret-a", "conda-forge")
    assert len(a) == 16 and int(a, 16) >= 0
    assert "conda" not in a and "secret" not in a
    assert hop("secret-b", "conda-forge") != a  # another proxy: another token
    assert hop("secret-a", "team") != a  # another channel: another token
    assert hop("secret-a", "conda-forge") == a  # stable within one proxy


def test_only_a_hop_already_on_the_chain_is_a_cycle():
    own = hop("s", "ch")
    other = hop("s", "cf")
    check_hop((), own, "ch")
    check_hop((other, hop("t", "ch")), own, "ch")  # another channel, another proxy's `ch`
    with pytest.raises(LoopDetected, match="'ch'"):
        check_hop((other, own), own, "ch")
    assert extended((other,), own) == (other, own)
    assert extended((own, other), own) == (own, other)  # never twice
    assert parse_chain(format_chain((other, own))) == (other, own)
