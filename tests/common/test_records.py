"""The "saved record matches or refuse" check: every difference named in full."""

import pytest

from common.errors import RecordMismatchError
from common.records import check_record

FIX = "use another folder"


def _refusal(saved, expected):
    with pytest.raises(RecordMismatchError) as error:
        check_record("stage.json", saved, expected, FIX)
    return str(error.value)


def test_a_record_that_agrees_on_the_expected_keys_passes_whatever_else_it_holds():
    check_record("stage.json", {"command": ["a", "b"], "seconds": 3.0}, {"command": ["a", "b"]}, FIX)


def test_long_values_are_named_in_full():
    saved, current = "/data/" + "x" * 80, "/data/" + "y" * 80
    assert _refusal({"root": saved}, {"root": current}) == (
        f"stage.json: written by another run (root {saved!r} -> {current!r}); {FIX}"
    )


def test_a_nested_record_names_the_inner_key_that_differs():
    saved = {"data": {"root": "/d", "sha256": "1" * 64}}
    current = {"data": {"root": "/d", "sha256": "2" * 64}}
    differing = f"data.sha256 {'1' * 64!r} -> {'2' * 64!r}"
    assert _refusal(saved, current) == f"stage.json: written by another run ({differing}); {FIX}"


@pytest.mark.parametrize(
    "saved, current, shown",
    [
        (
            ["t.py", "--costs", "0.1", "1", "--out", "o"],
            ["t.py", "--costs", "10", "1", "--out", "o"],
            "[..., '0.1', ...] -> [..., '10', ...]",
        ),
        (["t.py", "--out", "o"], ["t.py", "--out", "o", "--layer", "x"], "[..., 'o'] -> [..., 'o', '--layer', 'x']"),
        (["t.py", "--out", "o"], ["--fast", "t.py", "--out", "o"], "['t.py', ...] -> ['--fast', 't.py', ...]"),
        (["t.py", "a", "o"], ["t.py", "o"], "['t.py', 'a', ...] -> ['t.py', ...]"),
        ([], ["t.py"], "[] -> ['t.py']"),
    ],
)
def test_a_command_shows_the_words_that_differ_and_the_word_beside_an_insertion_or_deletion(saved, current, shown):
    assert _refusal({"command": saved}, {"command": current}) == (
        f"stage.json: written by another run (command {shown}); {FIX}"
    )
