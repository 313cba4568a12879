"""Submits an entry point as a SLURM job with submitit, and requeues it on preemption or time-out.

    python pretrain/main.py --slurm --nodes 4 --gpus-per-node 8 --partition P --time 4320 \\
        --config-file pretrain/configs/clsa_single.yaml DATA.ROOT /imagenet/train OUTPUT_DIR out/clsa

The job runs the same command without the SLURM flags; its submitit logs go to OUTPUT_DIR/slurm/.
SLURM signals SIGUSR2 `SIGNAL_DELAY_S` before the time limit (and on preemption, where the cluster
is set up so); submitit then calls the job's `checkpoint`, which resubmits the command with the
entry point's resume flags (`--resume auto` for pretraining), requeues the job and ends it. An entry
point that saves at a step boundary on a signal of its own (pretraining: SIGUSR1) gets that signal
first, and the job requeues once the entry point has saved and returned.
"""

import argparse
import importlib
import os
import signal
from pathlib import Path

# Seconds between SLURM's warning signal and the time limit: a step and a checkpoint fit.
SIGNAL_DELAY_S = 120


def add_arguments(parser):
    """Adds the SLURM flags to an entry point's parser (so that --help lists them)."""
    g = parser.add_argument_group("SLURM (submitit): with --slurm the command is submitted as a job, not run here")
    g.add_argument("--slurm", action="store_true", help="submit this command to SLURM")
    g.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    g.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per machine (default 8)")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--time", type=int, default=4320, metavar="MINUTES", help="time limit per job (default 3 days)")
    g.add_argument("--account", help="SLURM account")
    g.add_argument("--constraint", help="SLURM constraint, e.g. volta32gb")
    g.add_argument("--cpus-per-gpu", type=int, default=10, help="CPU cores per GPU (default 10)")
    g.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="local: submitit's local executor, which runs the job on this machine (a dry run)",
    )
    return parser


def split_argv(argv):
    """(SLURM flags, the command's own arguments)."""
    return add_arguments(argparse.ArgumentParser(add_help=False)).parse_known_args(argv)


def detectron2_launch_args():
    """detectron2 launch() flags of this SLURM task (one per node; launch() starts a process per GPU)."""
    import submitit
    import torch

    env = submitit.JobEnvironment()
    port = 20000 + int(env.job_id.split("_")[0]) % 20000 if env.job_id.split("_")[0].isdigit() else 29500
    return [
        "--num-gpus",
        str(max(torch.cuda.device_count(), 1)),
        "--num-machines",
        str(env.num_nodes),
        "--machine-rank",
        str(env.node),
        "--dist-url",
        f"tcp://{env.hostnames[0]}:{port}",
    ]


def with_resume(argv, resume_args):
    """`argv` with `resume_args` (e.g. ["--resume", "auto"]) in place of any --resume it had."""
    if not resume_args:
        return list(argv)
    out, skip = [], 0
    for i, arg in enumerate(argv):
        if skip:
            skip -= 1
        elif arg == "--resume":
            # A valued --resume takes the next word unless that is another flag.
            skip = int(len(resume_args) > 1 and i + 1 < len(argv) and not argv[i + 1].startswith("-"))
        elif not arg.startswith("--resume="):
            out.append(arg)
    return list(resume_args) + out


class Job:
    """The picklable job: calls `entry` ("module:function", taking argv) with the distributed
    environment of the SLURM task, and knows how to resubmit itself (submitit's `checkpoint`).

    task_per_gpu: one task per GPU with RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* set (torchrun's
    variables), or one task per node that starts its own processes.
    stop_signal: the signal on which the entry point saves at a step boundary and returns (None:
    submitit ends it where it is, and the new job resumes from its last periodic checkpoint).
    """

    def __init__(self, entry, argv, resume_args, task_per_gpu, stop_signal=None):
        self.entry, self.argv, self.resume_args = entry, list(argv), list(resume_args)
        self.task_per_gpu, self.stop_signal = task_per_gpu, stop_signal

    def __call__(self):
        import submitit

        if self.task_per_gpu:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        requeue_handler, stopped = None, []
        if self.stop_signal is not None:
            warning = submitit.JobEnvironment._usr_sig()
            requeue_handler = signal.getsignal(warning)

            def stop(signum, frame):  # save first; requeue once the entry point has returned
                if signal.getsignal(self.stop_signal) in (signal.SIG_DFL, signal.SIG_IGN, None):
                    return requeue_handler(signum, frame)  # no training loop listens yet: nothing to save
                stopped.append(signum)
                os.kill(os.getpid(), self.stop_signal)

            signal.signal(warning, stop)
        module, function = self.entry.split(":")
        result = getattr(importlib.import_module(module), function)(self.argv)
        if stopped:
            signal.signal(stopped[0], requeue_handler)
            os.kill(os.getpid(), stopped[0])  # submitit's handler: checkpoint(), requeue, exit
        return result

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(
            Job(
                self.entry,
                with_resume(self.argv, self.resume_args),
                self.resume_args,
                self.task_per_gpu,
                self.stop_signal,
            )
        )


def submit(flags, job, output_dir, name):
    """Submits `job` with `flags` (from split_argv); prints and returns the submitit job."""
    import submitit

    folder = Path(output_dir).resolve() / "slurm"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=flags.slurm_cluster)
    tasks = max(flags.gpus_per_node, 1) if job.task_per_gpu else 1  # one CPU process without GPUs
    executor.update_parameters(
        name=name,
        nodes=flags.nodes,
        gpus_per_node=flags.gpus_per_node,
        tasks_per_node=tasks,
        cpus_per_task=flags.cpus_per_gpu * max(flags.gpus_per_node, 1) // tasks,
        timeout_min=flags.time,
        slurm_partition=flags.partition,
        slurm_account=flags.account,
        slurm_constraint=flags.constraint,
        slurm_signal_delay_s=SIGNAL_DELAY_S,
    )
    submitted = executor.submit(job)
    print(
        f"submitted job {submitted.job_id} ({flags.nodes} node(s) x {flags.gpus_per_node} GPU(s)); "
        f"logs {submitted.paths.stdout} and {submitted.paths.stderr}"
    )
    return submitted
