"""Submits an entry point as a SLURM job with submitit, and requeues it on preemption or time-out.

    python pretrain/main.py --slurm --nodes 4 --gpus-per-node 8 --partition P --time 4320 \\
        --config-file pretrain/configs/clsa_single.yaml DATA.ROOT /imagenet/train OUTPUT_DIR out/clsa

`--slurm-extra KEY=VALUE` (repeatable) adds any other sbatch option, e.g. `--slurm-extra qos=high
--slurm-extra mem=64G`. The job runs the same command without the SLURM flags; its submitit logs go
to OUTPUT_DIR/slurm/.
SLURM signals SIGUSR2 `SIGNAL_DELAY_S` before the time limit (and on preemption, where the cluster
is set up so); submitit then calls the job's `checkpoint`, which resubmits the command with the
entry point's resume flags (`--resume auto` for pretraining), requeues the job and ends it. An entry
point that saves at a step boundary on a signal of its own (pretraining: SIGUSR1) gets that signal
first, and the job requeues once the entry point has saved and returned.
"""

import argparse
import copy
import importlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from common.cli import one_line_errors

# Seconds between SLURM's warning signal and the time limit: a step and a checkpoint fit.
SIGNAL_DELAY_S = 120
# sbatch parameters that have a flag of their own here, so that one setting has one spelling.
OWN_FLAGS = {"partition": "--partition", "account": "--account", "constraint": "--constraint", "time": "--time"}


def slurm_extra(text):
    """argparse type of --slurm-extra: "KEY=VALUE" -> (key, value), the key as submitit spells it."""
    key, sep, value = text.partition("=")
    key = key.replace("-", "_")
    if not sep or not value or not re.fullmatch(r"[a-z][a-z0-9_]*", key) or "\n" in value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE of an sbatch option, e.g. qos=high or mem=64G")
    if key in OWN_FLAGS:
        raise argparse.ArgumentTypeError(f"{key} has a flag of its own: use {OWN_FLAGS[key]}")
    return key, value


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
        "--slurm-extra",
        type=slurm_extra,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, repeatable: --slurm-extra qos=high --slurm-extra mem=64G",
    )
    g.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="local: submitit's local executor, which runs the job on this machine (a dry run)",
    )
    return parser


def split_argv(argv):
    """(SLURM flags, the command's own arguments)."""
    return add_arguments(one_line_errors(argparse.ArgumentParser(add_help=False))).parse_known_args(argv)


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
        self.wait_for = []  # local executor jobs that must succeed first (see submit)

    def __call__(self):
        import submitit

        for job in self.wait_for:
            while job_state(job) != "ended":
                time.sleep(1)
            try:
                job.result()
            except Exception as error:  # submitit's FailedJobError or UncompletedJobError
                raise RuntimeError(f"job {job.job_id}, which this job runs after, did not succeed") from error

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


def make_executor(flags, output_dir, name, tasks_per_node, gpus_per_node, after=()):
    """submitit's executor for one job with `flags` (from split_argv); its folder is OUTPUT_DIR/slurm/.
    after: jobs that must succeed before this one starts (sbatch --dependency=afterok)."""
    import submitit

    extra = dict(flags.slurm_extra)
    if after:
        afterok = "afterok:" + ":".join(job.job_id for job in after)
        extra["dependency"] = ",".join(filter(None, (extra.get("dependency"), afterok)))
        # A job whose dependency failed is cancelled, not left pending for good.
        extra["kill_on_invalid_dep"] = "yes"
    executor = submitit.AutoExecutor(folder=Path(output_dir).resolve() / "slurm" / "%j", cluster=flags.slurm_cluster)
    executor.update_parameters(
        name=name,
        nodes=flags.nodes,
        gpus_per_node=gpus_per_node,
        tasks_per_node=tasks_per_node,
        cpus_per_task=flags.cpus_per_gpu * max(gpus_per_node, 1) // tasks_per_node,
        timeout_min=flags.time,
        slurm_partition=flags.partition,
        slurm_account=flags.account,
        slurm_constraint=flags.constraint,
        slurm_signal_delay_s=SIGNAL_DELAY_S,
        slurm_additional_parameters=extra,
    )
    return executor


def submit(flags, job, output_dir, name, after=(), gpus_per_node=None):
    """Submits `job` with `flags` (from split_argv) after the jobs `after` have succeeded; prints and
    returns the submitit job. gpus_per_node: this job's, if not that of the flags."""
    gpus = flags.gpus_per_node if gpus_per_node is None else gpus_per_node
    tasks = max(gpus, 1) if job.task_per_gpu else 1  # one CPU process without GPUs
    if after and flags.slurm_cluster == "local":
        # The local executor knows no dependencies: the job itself waits for them, and fails if one did.
        job = copy.copy(job)
        job.wait_for = list(after)
    executor = make_executor(flags, output_dir, name, tasks, gpus, () if flags.slurm_cluster == "local" else after)
    submitted = executor.submit(job)
    print(
        f"submitted job {submitted.job_id} ({flags.nodes} node(s) x {gpus} GPU(s)); "
        f"logs {submitted.paths.stdout} and {submitted.paths.stderr}"
    )
    return submitted


def recorded_job(cluster, output_dir, job_id):
    """The submitit job `job_id` that `submit` started earlier for output_dir, on `cluster`."""
    from submitit.local.local import LocalJob
    from submitit.slurm.slurm import SlurmJob

    return (LocalJob if cluster == "local" else SlurmJob)(Path(output_dir).resolve() / "slurm" / "%j", job_id)


# SLURM's job states (squeue %T, sacct State) that mean "not started yet" and "started, not ended".
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED"}
_RUNNING = {"CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}


def job_state(job):
    """ "queued", "running" or "ended": from squeue (or sacct once the job left the queue) for a SLURM
    job, and from its controller process for a local one (whose job id is that process's pid)."""
    from submitit.local.local import LocalJob

    if isinstance(job, LocalJob):
        try:  # a pid reused by another program, or a zombie (empty cmdline), is no job
            alive = b"submitit" in Path(f"/proc/{int(job.job_id)}/cmdline").read_bytes()
        except (OSError, ValueError):
            alive = False
        return "running" if alive else "ended"
    for command in (["squeue", "-h", "-o", "%T", "-j"], ["sacct", "-n", "-X", "-P", "-o", "State", "-j"]):
        try:
            found = subprocess.run([*command, job.job_id], capture_output=True, text=True, timeout=60).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if found:
            return "queued" if found[0] in _QUEUED else "running" if found[0] in _RUNNING else "ended"
    return "ended"
