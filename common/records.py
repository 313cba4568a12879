"""Saved state that a rerun resumes from or skips, checked against what this run would write.

A pretraining checkpoint, a stage of the suite, a detection trial, a linear-evaluation checkpoint
and a synthetic data folder each record what produced them. A rerun continues only if the record
agrees on every identifying key; otherwise it stops, naming the keys that differ, and leaves the
saved state untouched.
"""

from common.errors import RecordMismatchError

ABSENT = "<absent>"


def _differences(key, saved, current):
    """`KEY saved -> current` for each way `saved` differs from `current`, in full: a dict by its
    differing keys (KEY.SUBKEY), a list by the stretch between the parts both share."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [
            line
            for sub in sorted(saved.keys() | current.keys())
            for line in _differences(f"{key}.{sub}", saved.get(sub, ABSENT), current.get(sub, ABSENT))
        ]
    if isinstance(saved, list) and isinstance(current, list) and saved != current:
        start = next(i for i, (a, b) in enumerate(zip([*saved, None], [*current, None])) if a != b)
        end = 0
        while end < min(len(saved), len(current)) - start and saved[-1 - end] == current[-1 - end]:
            end += 1
        if min(len(saved), len(current)) - end == start:  # an insertion: show the word beside it too
            start, end = (start - 1, end) if start else (start, max(end - 1, 0))
        return [f"{key} {_stretch(saved, start, end)} -> {_stretch(current, start, end)}"]
    return [] if saved == current else [f"{key} {saved!r} -> {current!r}"]


def _stretch(items, start, end):
    shown = ["..."] * bool(start) + [repr(item) for item in items[start : len(items) - end]] + ["..."] * bool(end)
    return f"[{', '.join(shown)}]"


def check_record(path, saved, expected, fix):
    """Raises RecordMismatchError if the record `saved` (a dict, or None if `path` holds none that
    reads) differs from `expected` on any of its keys; the message names each difference in full as
    `KEY saved -> current`, then `fix`."""
    if not isinstance(saved, dict):
        raise RecordMismatchError(f"{path}: holds no record of what wrote it; {fix}")
    differing = [line for key, value in expected.items() for line in _differences(key, saved.get(key, ABSENT), value)]
    if differing:
        raise RecordMismatchError(f"{path}: written by another run ({'; '.join(differing)}); {fix}")
