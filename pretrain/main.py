r"""CLSA / MoCo v2 pretraining.

    python pretrain/main.py --config-file pretrain/configs/clsa_single.yaml DATA.ROOT /imagenet/train
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        pretrain/main.py --config-file pretrain/configs/clsa_multi.yaml DATA.ROOT /imagenet/train
    srun --nodes 2 --ntasks-per-node 8 --gpus-per-node 8 \
        python pretrain/main.py --config-file pretrain/configs/clsa_multi.yaml DATA.ROOT /imagenet/train

A plain `python pretrain/main.py` starts one process per GPU itself (--num-gpus, default all; one
process on a machine without GPU); under torchrun or srun it is one of their processes
(common/distributed.py).
"""

import argparse
import os
import signal
import sys

from common import distributed, slurm
from common.cli import exit_on_user_error, one_line_errors
from common.datasets import check_image_root
from common.errors import ConfigError
from pretrain.config import load_config
from pretrain.engine import train
from pretrain.preemption import STOP_SIGNALS


def parse_args(argv=None):
    parser = one_line_errors(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )
    parser.add_argument(
        "--config-file", default="", metavar="FILE", help="YAML preset, e.g. pretrain/configs/clsa_single.yaml"
    )
    parser.add_argument(
        "--resume",
        default="",
        metavar="auto|PATH",
        help="'auto': continue from the newest readable checkpoint in OUTPUT_DIR (start fresh if none); "
        "or a checkpoint file",
    )
    distributed.add_arguments(parser)
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides, e.g. SOLVER.BATCH_SIZE 512"
    )
    slurm.add_arguments(parser)
    return parser.parse_args(argv)


def setup(args, world_size):
    """The frozen config of the command line `args` (pretrain.config.load_config)."""
    return load_config(args.config_file, args.opts, world_size)


def _train(process, cfg, resume):
    train(cfg, resume, process.rank, process.world_size, process.local_rank)


def configure(args, world_size=None):
    """(cfg, launch plan) for `world_size` processes (default: those of this launch,
    common.distributed.detect); raises a UserError for every mistake a user can fix, before anything
    is written."""
    plan = distributed.detect(args.num_gpus)
    cfg = setup(args, world_size or plan.world_size)
    check_image_root(cfg.DATA.ROOT)
    if args.resume not in ("", "auto") and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume {args.resume}: no such file; pass a checkpoint file, or --resume auto")
    return cfg, plan


def main(args, configured=None):
    cfg, plan = configured or configure(args)
    # Spawned processes get preemption signals from this one: they must save.
    distributed.launch(_train, cfg, args.resume, plan=plan, stop_signals=STOP_SIGNALS)


def run_argv(argv):
    """main() of a command line's arguments: what a SLURM job runs (common/slurm.py)."""
    main(parse_args(argv))


def submit_or_run(args):
    """Checks the whole configuration, then submits the run to SLURM (--slurm) or runs it here."""
    flags, job_argv = slurm.split_argv(sys.argv[1:]) if args.slurm else (None, None)
    # With --slurm, the job's processes are its nodes' GPUs; a mistake stops here, not in the job.
    configured = configure(args, flags.nodes * max(flags.gpus_per_node, 1) if flags else None)
    if flags:
        job = slurm.Job(
            "pretrain.main:run_argv", job_argv, ["--resume", "auto"], task_per_gpu=True, stop_signal=signal.SIGUSR1
        )
        slurm.submit(flags, job, configured[0].OUTPUT_DIR, "clsa-pretrain")
    else:
        main(args, configured)


def cli_main():
    """`python pretrain/main.py`, and the `clsa-pretrain` command of an installed package."""
    exit_on_user_error(submit_or_run, parse_args())


if __name__ == "__main__":
    cli_main()
