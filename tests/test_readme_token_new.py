"""README: `condaproxy token new` prints "a token every conda client can carry in a
`/t/<token>/` URL", which the configuration then accepts. A length that gives an empty or a
guessable token is refused (exit 2, like any bad argument), not printed with exit 0."""

from __future__ import annotations

import re

import pytest

from condaproxy.cli import main


def test_token_new_prints_a_carryable_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "new"]) == 0
    token = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[a-zA-Z0-9]{40}", token)
    assert main(["token", "new", "--length", "16"]) == 0
    assert len(capsys.readouterr().out.strip()) == 16


@pytest.mark.parametrize("length", ["0", "-5", "8", "15", "100000", "abc"])
def test_token_new_refuses_lengths_that_make_no_usable_token(
    length: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["token", "new", "--length", length])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--length" in captured.err
