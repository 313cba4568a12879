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
import re
import signal
import sys

from common import distributed, slurm
from common.cli import entry_parser, exit_on_user_error
from pretrain import launch
from pretrain.config import load_config

# An upper-case name, as the overrides' keys (SEED, SOLVER.BASE_LR).
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def parse_args(argv=None):
    parser = entry_parser(__doc__, announce=False)
    parser.add_argument(
        "--config-file", default="", metavar="FILE", help="YAML preset, e.g. pretrain/configs/clsa_single.yaml"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default="",
        metavar="PATH",
        help="alone or 'auto': continue from the newest readable checkpoint in OUTPUT_DIR (start fresh if "
        "none); or continue from the checkpoint file PATH",
    )
    distributed.add_arguments(parser)
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides, e.g. SOLVER.BATCH_SIZE 512"
    )
    slurm.add_arguments(parser)
    args = parser.parse_args(argv)
    if CONFIG_KEY.match(args.resume):
        parser.error(
            f"--resume took the config key {args.resume} as its checkpoint; write --resume last, "
            f"or --resume auto, before the KEY VALUE overrides"
        )
    return args


def setup(args, world_size):
    """The frozen config of the command line `args` (pretrain.config.load_config)."""
    return load_config(args.config_file, args.opts, world_size)


def configure(args, world_size=None):
    """(cfg, launch plan) of the command line `args` (pretrain.launch.configure)."""
    return launch.configure(args.config_file, args.opts, args.resume, args.num_gpus, world_size)


def main(args, configured=None):
    cfg, plan = configured or configure(args)
    launch.run(cfg, plan, args.resume)


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
