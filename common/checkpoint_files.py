"""Reading checkpoint files, which are untrusted input, and finding a run's newest one.

Every reader goes through read_checkpoint: `torch.load(..., weights_only=True)` on the CPU, and a
CheckpointError that says why a file cannot be read (damaged, unsafe, not a checkpoint at all).
"""

import logging
import pickle
import re
from pathlib import Path

import torch

from common.errors import CheckpointError

logger = logging.getLogger(__name__)


def read_checkpoint(path, fix="copy or save it again"):
    """The object saved in `path`, loaded safely; CheckpointError naming the file, the reason and,
    for a damaged file, `fix`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, f"the file is empty; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types; unloadable_reason tells them apart
        raise CheckpointError(path, unloadable_reason(path, error, fix)) from error


def unloadable_reason(path, error, fix):
    """Why `torch.load(path, weights_only=True)` raised `error`, judged from the file's first bytes and
    the error's type (not its wording, which changes between torch versions)."""
    with open(path, "rb") as f:
        head = f.read(64)
    detail = _one_line(error)
    if head.startswith(b"PK"):  # torch.save's zip format
        # The safe unpickler refuses a global it does not allow (embedded code) with an
        # UnpicklingError; a damaged archive fails in the zip reader with a RuntimeError.
        if isinstance(error, pickle.UnpicklingError):
            return f"holds objects that safe loading (weights_only=True) refuses: {detail}"
        return f"truncated or corrupt PyTorch checkpoint ({detail}); {fix}"
    if head.startswith(b"\x80"):
        return f"unreadable pickle, truncated or holding unsafe objects ({detail})"
    if head.lstrip()[:1] in (b"{", b"["):
        return "is a JSON/text file, not a PyTorch checkpoint"
    return f"is not a PyTorch checkpoint ({detail})"


def _one_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "Unsupported" in line), lines[0] if lines else "")
    reason = reason.split("WeightsUnpickler error:")[-1].strip().split(". ")[0]
    return f"{type(error).__name__}: {reason[:200]}" if reason else type(error).__name__


def last_saved(output_dir):
    """The checkpoint that output_dir/last_checkpoint names (detectron2's pointer file), or None."""
    pointer = Path(output_dir) / "last_checkpoint"
    named = Path(output_dir) / pointer.read_text().strip() if pointer.is_file() else None
    return named if named and named.is_file() else None


def _candidates(output_dir):
    """Checkpoint files, newest first: the one last_checkpoint names, model_final.pth, then by iteration."""
    output_dir = Path(output_dir)
    numbered = sorted(
        output_dir.glob("model_[0-9]*.pth"), key=lambda p: int(re.search(r"(\d+)", p.name).group(1)), reverse=True
    )
    files = [output_dir / "model_final.pth"] if (output_dir / "model_final.pth").exists() else []
    files += numbered
    named = last_saved(output_dir)
    return [named] + [f for f in files if f != named] if named else files


def latest_checkpoint(output_dir, load):
    """(path, load(path)) of the newest checkpoint in output_dir that `load` accepts, or None if there
    is none. A damaged file is reported and the one before it tried; if every file is damaged this
    raises rather than let a run silently start from scratch."""
    files = _candidates(output_dir)
    for path in files:
        try:
            return path, load(path)
        except CheckpointError as e:
            logger.error("%s; falling back to the previous checkpoint", e)
    if files:
        raise CheckpointError(
            output_dir,
            f"no readable checkpoint (tried {[f.name for f in files]}); remove them or pick another OUTPUT_DIR",
        )
    return None
