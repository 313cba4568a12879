"""Pretraining checkpoints, named and listed as detectron2 does (model_XXXXXXX.pth, last_checkpoint).

A checkpoint is a dict that `torch.load(path, weights_only=True)` reads back:
    kind        "clsa-suite/pretrain" (the converters check it)
    model       CLSA.state_dict(): encoder_q.*, encoder_k.*, queue, queue_ptr (no "module." prefix)
    optimizer   the SGD state
    iteration   the last completed iteration (0-based); training resumes at iteration + 1
    epoch       the epoch that iteration belongs to
    config      the resolved config as YAML text
    rng         {"torch": CPU RNG state, "cuda": CUDA RNG state (when on a GPU)}
"""

import logging
import pickle
import re
from pathlib import Path

import torch
import yaml

from common.io import atomic_path, atomic_torch_save

KIND = "clsa-suite/pretrain"
_REQUIRED = ("kind", "model", "optimizer", "iteration", "epoch", "config", "rng")
# The config keys that define a run: the weight shapes, the loss, the views, the schedule (the batch
# sets iterations per epoch, hence the lr and the sampler position) and the seed. A checkpoint
# resumes only a run that agrees on all of them.
RUN_KEYS = (
    "MODEL.ARCH",
    "MODEL.DIM",
    "MODEL.MLP_HIDDEN",
    "MODEL.QUEUE_SIZE",
    "MODEL.STRONG_LOSS",
    "DATA.KEY_VIEW",
    "DATA.WEAK_VIEWS",
    "DATA.STRONG_VIEWS",
    "DATA.STRONG_KEY",
    "DATA.STRONG_NUM_OPS",
    "DATA.STRONG_PROB",
    "SOLVER.BATCH_SIZE",
    "SOLVER.EPOCHS",
    "SEED",
)
logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, for resuming or converting alike; the message is one line
    naming the file and the fix."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")


def capture_rng():
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def restore_rng(rng):
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def first_non_finite(state_dict):
    """The name of the first floating-point tensor (weight, BN statistic, queue) holding a NaN or an
    infinity, or None."""
    return next(
        (
            name
            for name, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
        ),
        None,
    )


def last_saved(output_dir):
    """The checkpoint that output_dir/last_checkpoint names, or None."""
    pointer = Path(output_dir) / "last_checkpoint"
    if pointer.is_file() and (Path(output_dir) / pointer.read_text().strip()).is_file():
        return Path(output_dir) / pointer.read_text().strip()
    return None


def save_checkpoint(output_dir, name, model, optimizer, iteration, epoch, config_yaml):
    """Writes output_dir/name.pth atomically, then points last_checkpoint at it."""
    output_dir = Path(output_dir)
    path = output_dir / f"{name}.pth"
    atomic_torch_save(
        {
            "kind": KIND,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "epoch": epoch,
            "config": config_yaml,
            "rng": capture_rng(),
        },
        path,
    )
    with atomic_path(output_dir / "last_checkpoint") as tmp:
        tmp.write_text(path.name)
    return path


def unloadable_reason(path, error, fix="copy or save it again"):
    """Why `torch.load(path, weights_only=True)` raised `error`, from the file's first bytes and the
    error's type (not its wording, which changes between torch versions), with `fix` for a damaged
    file: the shared diagnosis of every reader of untrusted checkpoints."""
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


def load_checkpoint(path):
    """Reads and checks one checkpoint; any damage raises CheckpointError naming the file."""
    if not Path(path).is_file():
        raise CheckpointError(path, "no such file; pass an existing checkpoint, or --resume auto")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types; unloadable_reason tells them apart
        raise CheckpointError(path, unloadable_reason(path, e, fix="delete it to resume from an older one")) from e
    missing = [k for k in _REQUIRED if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing or checkpoint["kind"] != KIND:
        raise CheckpointError(
            path,
            f"not a {KIND} checkpoint (missing {missing or 'nothing'}, "
            f"kind {checkpoint.get('kind') if isinstance(checkpoint, dict) else None!r})",
        )
    diverged = first_non_finite(checkpoint["model"])
    if diverged:
        raise CheckpointError(
            path,
            f"{diverged} is not finite: the run had diverged when it was saved; delete it to resume from an older one",
        )
    return checkpoint


def check_same_run(path, checkpoint, config_yaml):
    """Raises CheckpointError naming the RUN_KEYS on which `checkpoint` and `config_yaml` differ."""

    def lookup(config, key):
        for part in key.split("."):
            config = config.get(part, "<absent>") if isinstance(config, dict) else "<absent>"
        return config

    saved, current = yaml.safe_load(checkpoint["config"]) or {}, yaml.safe_load(config_yaml)
    differing = [
        f"{key} {lookup(saved, key)!r} -> {lookup(current, key)!r}"
        for key in RUN_KEYS
        if lookup(saved, key) != lookup(current, key)
    ]
    if differing:
        raise CheckpointError(
            path,
            f"written by a different run ({'; '.join(differing)}); resume with the "
            f"checkpoint's own config, or start this run in a new OUTPUT_DIR",
        )


def _candidates(output_dir):
    """Checkpoint files, newest first: the one last_checkpoint names, then by iteration."""
    output_dir = Path(output_dir)
    numbered = sorted(
        output_dir.glob("model_[0-9]*.pth"), key=lambda p: int(re.search(r"(\d+)", p.name).group(1)), reverse=True
    )
    files = [output_dir / "model_final.pth"] if (output_dir / "model_final.pth").exists() else []
    files += numbered
    pointer = output_dir / "last_checkpoint"
    if pointer.exists():
        named = output_dir / pointer.read_text().strip()
        if named.exists():
            files = [named] + [f for f in files if f != named]
    return files


def find_resume_checkpoint(output_dir):
    """(path, checkpoint) of the newest readable checkpoint in output_dir, or None if there is none.

    Damaged files are reported and skipped; if every file is damaged this raises rather than
    silently restarting from scratch.
    """
    files = _candidates(output_dir)
    for path in files:
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            logger.error("%s; falling back to the previous checkpoint", e)
    if files:
        raise CheckpointError(
            output_dir,
            f"no readable checkpoint (tried {[f.name for f in files]}); remove them or pick another OUTPUT_DIR",
        )
    return None
