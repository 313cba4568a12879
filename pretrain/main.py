r"""CLSA / MoCo v2 pretraining.

    python pretrain/main.py --config-file pretrain/configs/clsa_single.yaml DATA.ROOT /imagenet/train
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        pretrain/main.py --config-file pretrain/configs/clsa_multi.yaml DATA.ROOT /imagenet/train

A plain `python pretrain/main.py` starts one process per GPU itself (--num-gpus, default all; one
process on a machine without GPU); under torchrun it is one of torchrun's processes.
"""

import argparse
import os
import signal
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common import slurm
from common.cli import at_least, exit_on_user_error, one_line_errors
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
    parser.add_argument(
        "--num-gpus",
        type=at_least(1),
        default=None,
        help="processes to start on this machine (default: one per GPU, or 1 without GPU); ignored under torchrun",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides, e.g. SOLVER.BATCH_SIZE 512"
    )
    slurm.add_arguments(parser)
    return parser.parse_args(argv)


def setup(args, world_size):
    """The frozen config of the command line `args` (pretrain.config.load_config)."""
    return load_config(args.config_file, args.opts, world_size)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank, world_size, cfg, resume):
    # mp.spawn passes its start method on to the processes it starts; their DataLoader workers fork,
    # as in any other process on Linux (the view transforms hold lambdas, which spawn cannot pickle).
    mp.set_start_method("fork", force=True)
    _run(cfg, resume, local_rank, world_size, local_rank)


def _run(cfg, resume, rank, world_size, local_rank):
    if world_size > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        train(cfg, resume, rank, world_size, local_rank)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def configure(args, world_size=None):
    """(cfg, world size, under torchrun?) for `world_size` processes (default: torchrun's, or those
    this machine starts); raises a UserError for every mistake a user can fix, before anything is
    written."""
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if world_size is None:
        world_size = (
            int(os.environ["WORLD_SIZE"])
            if torchrun
            else args.num_gpus
            if args.num_gpus is not None
            else max(torch.cuda.device_count(), 1)
        )
    cfg = setup(args, world_size)
    check_image_root(cfg.DATA.ROOT)
    if args.resume not in ("", "auto") and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume {args.resume}: no such file; pass a checkpoint file, or --resume auto")
    return cfg, world_size, torchrun


def main(args, configured=None):
    cfg, world_size, torchrun = configured or configure(args)
    if torchrun:
        _run(cfg, args.resume, int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))
    elif world_size == 1:
        _run(cfg, args.resume, 0, 1, 0)
    else:
        _spawn(cfg, args.resume, world_size)


def _spawn(cfg, resume, world_size):
    """One process per GPU on this machine, forwarding preemption signals to them."""
    # The rendezvous address is given to the processes only: left in this process's environment, it
    # would reach whatever it starts next (a SLURM job refuses an inherited MASTER_ADDR).
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    added = {key: value for key, value in rendezvous.items() if key not in os.environ}
    os.environ.update(added)
    try:
        context = mp.spawn(_spawned, args=(world_size, cfg, resume), nprocs=world_size, join=False)
    finally:
        for key in added:
            del os.environ[key]

    def forward_signal(signum, frame):  # preemption reaches the launcher; the workers must save
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward_signal)
    while not context.join():
        pass


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
