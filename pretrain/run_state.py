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

from pathlib import Path

import torch
import yaml

from common.checkpoint_files import latest_checkpoint, read_checkpoint
from common.constants import PRETRAIN_CHECKPOINT_KIND
from common.errors import CheckpointError
from common.io import atomic_path, atomic_torch_save
from common.records import ABSENT, check_record

KIND = PRETRAIN_CHECKPOINT_KIND
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
    "DATA.COLOR_JITTER",
    "DATA.COLOR_JITTER_PROB",
    "DATA.GRAYSCALE_PROB",
    "SOLVER.BATCH_SIZE",
    "SOLVER.EPOCHS",
    "SEED",
)


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


def load_checkpoint(path):
    """Reads and checks one pretraining checkpoint; any damage raises CheckpointError naming the file."""
    checkpoint = read_checkpoint(path, fix="delete it to resume from an older one")
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


def find_resume_checkpoint(output_dir):
    """(path, checkpoint) of the newest readable checkpoint in output_dir, or None if there is none."""
    return latest_checkpoint(output_dir, load_checkpoint)


def run_identity(config_yaml):
    """The RUN_KEYS of a config's YAML text, by their dotted names."""
    config = yaml.safe_load(config_yaml) or {}
    identity = {}
    for key in RUN_KEYS:
        value = config
        for part in key.split("."):
            value = value.get(part, ABSENT) if isinstance(value, dict) else ABSENT
        identity[key] = value
    return identity


def check_same_run(path, checkpoint, config_yaml):
    """Raises RecordMismatchError naming the RUN_KEYS on which `checkpoint` and `config_yaml` differ, and
    CheckpointError for a checkpoint whose config is not plain YAML."""
    try:
        saved = run_identity(checkpoint["config"])
    except yaml.YAMLError as error:
        raise CheckpointError(
            path, f"its config is not plain YAML ({error.problem}); no run of this suite wrote it"
        ) from None
    check_record(
        path,
        saved,
        run_identity(config_yaml),
        "resume with the checkpoint's own config, or start this run in a new OUTPUT_DIR",
    )
