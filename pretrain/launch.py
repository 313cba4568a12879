"""A pretraining run from its configuration: every mistake a user can fix is found before anything is
written, then the run's processes are launched (common/distributed.py), one run per OUTPUT_DIR."""

import contextlib
import os

from common import distributed
from common.datasets import check_image_root
from common.errors import ConfigError
from common.locking import output_lock
from pretrain.config import load_config
from pretrain.engine import train
from pretrain.preemption import STOP_SIGNALS


def configure(config_file, opts, resume="", num_gpus=None, world_size=None):
    """(frozen cfg, launch plan) for `world_size` processes (default: those of this launch,
    common.distributed.detect); raises a UserError for every mistake a user can fix."""
    plan = distributed.detect(num_gpus)
    cfg = load_config(config_file, opts, world_size or plan.world_size)
    check_image_root(cfg.DATA.ROOT)
    if resume not in ("", "auto") and not os.path.isfile(resume):
        raise ConfigError(f"--resume {resume}: no such file; pass a checkpoint file, or --resume auto")
    return cfg, plan


def _train(process, cfg, resume):
    train(cfg, resume, process.rank, process.world_size, process.local_rank)


def run(cfg, plan, resume=""):
    """Trains `cfg` in the processes of `plan`. The launcher of global rank 0 holds OUTPUT_DIR for all of
    the run's processes, so that a second run into the same folder is refused."""
    with output_lock(cfg.OUTPUT_DIR) if plan.first_rank == 0 else contextlib.nullcontext():
        # Spawned processes get preemption signals from this one: they must save.
        distributed.launch(_train, cfg, resume, plan=plan, stop_signals=STOP_SIGNALS)
