"""Saved state that a rerun resumes from or skips, checked against what this run would write.

A pretraining checkpoint, a stage of the suite, a detection trial, a linear-evaluation checkpoint
and a synthetic data folder each record what produced them. A rerun continues only if the record
agrees on every identifying key; otherwise it stops, naming the keys that differ, and leaves the
saved state untouched.
"""

from common.errors import RecordMismatchError

ABSENT = "<absent>"


def _shown(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_record(path, saved, expected, fix):
    """Raises RecordMismatchError if the record `saved` (a dict, or None if `path` holds none that
    reads) differs from `expected` on any of its keys; the message names each such key as
    `KEY saved -> current`, then `fix`."""
    if not isinstance(saved, dict):
        raise RecordMismatchError(f"{path}: holds no record of what wrote it; {fix}")
    differing = [
        f"{key} {_shown(saved.get(key, ABSENT))} -> {_shown(value)}"
        for key, value in expected.items()
        if saved.get(key, ABSENT) != value
    ]
    if differing:
        raise RecordMismatchError(f"{path}: written by another run ({'; '.join(differing)}); {fix}")
