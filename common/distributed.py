"""One process group for every multi-process entry point: how it was launched, set-up and teardown,
and this process's slice of a data set.

`launch(fn, *args)` runs `fn(process, *args)` in every process of the run, where `process` holds the
rank, world size, local rank and device. It recognises, in this order:
- torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which submitit's
  TorchDistributedEnvironment also exports;
- srun's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID); the master is the first host of the step's node
  list and the port 20000 + SLURM_JOB_ID mod 20000, unless MASTER_ADDR / MASTER_PORT say otherwise.
  With one task per node, each task starts one process per GPU of its node;
- a submitit job (submitit's JobEnvironment, e.g. its local executor);
- otherwise a plain `python`, which starts --num-gpus processes (default: one per visible GPU, one
  without GPU) and forwards preemption signals to them.

Every process prints one first line naming the mode, its rank in the world size and its device. The
processes meet within CLSA_RENDEZVOUS_TIMEOUT_S seconds (default 300); a process that is not met in
time ends with one `error:` line naming what is missing and exit code 2, never a hang.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.constants import default_pg_timeout

from common.cli import at_least
from common.errors import UserError

TIMEOUT_VARIABLE = "CLSA_RENDEZVOUS_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300


class LaunchError(UserError):
    """The processes of a run did not form their world: a task missing, or an unreachable master."""


@dataclass(frozen=True)
class Plan:
    """How this launcher's processes join the run: it starts `processes` of them (1: it is one itself),
    with ranks first_rank, first_rank + 1, ... and local ranks first_local_rank, ..."""

    mode: str
    world_size: int
    first_rank: int
    first_local_rank: int
    processes: int
    master_addr: str
    master_port: int
    nodes: int = 1
    job: str = ""  # what the error line names as missing when the world does not form

    def describe(self):
        """The first line of a launcher that starts its processes through another library."""
        last = self.first_rank + self.processes - 1
        ranks = f"rank {self.first_rank}" if self.processes == 1 else f"ranks {self.first_rank}-{last}"
        return f"launch: {self.mode}, {ranks} of world size {self.world_size} on {self.nodes} node(s)"


@dataclass(frozen=True)
class Process:
    mode: str
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def add_arguments(parser):
    parser.add_argument(
        "--num-gpus",
        type=at_least(1),
        default=None,
        help="processes a plain `python` starts on this machine (default: one per GPU, or 1 without GPU); "
        "ignored under torchrun, srun with a task per GPU, or submitit",
    )
    return parser


def rank_and_world():
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_slice(dataset):
    """This process's slice of `dataset`: items rank, rank + world, ...; the slices are disjoint and
    cover it (no padding repeats, unlike DistributedSampler)."""
    rank, world = rank_and_world()
    return torch.utils.data.Subset(dataset, range(rank, len(dataset), world))


def gather_slices(local, total):
    """The rows of every process's rank_slice (rank, rank + world, ...) back in data set order, on every
    process; `local` is on the device the backend communicates from."""
    rank, world = rank_and_world()
    if world == 1:
        return local
    rows = -(-total // world)
    padded = local.new_zeros((rows, *local.shape[1:]))
    padded[: len(local)] = local
    gathered = local.new_empty((world * rows, *local.shape[1:]))
    dist.all_gather_into_tensor(gathered, padded)
    # Row i of process r is item r + i * world: interleave, then drop the padding at the end.
    return gathered.unflatten(0, (world, rows)).transpose(0, 1).flatten(0, 1)[:total]


def all_reduce_sum(values, device):
    """`values` (numbers) summed over the processes, as floats."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def _visible_gpus():
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_host(nodelist):
    """The first host of a SLURM node list ("gpu[003-005,010],cpu1" -> "gpu003"): `scontrol show
    hostnames` where SLURM's tools are installed, else the list's own syntax."""
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    match = re.match(r"([^,\[]+)(?:\[([^\],-]+))?", nodelist)
    return match.group(1) + (match.group(2) or "")


def _job_port(job_id):
    job = str(job_id).split("_")[0]
    return 20000 + int(job) % 20000 if job.isdigit() else 29500


def _per_node(mode, tasks, nodes, node, rank, local, num_gpus, addr, port, job):
    """The plan of a task of a scheduler: one process per GPU of the node when each node runs one task
    that sees several GPUs, else the task itself."""
    gpus = num_gpus or _visible_gpus()
    if tasks == nodes and gpus > 1:
        return Plan(mode, tasks * gpus, node * gpus, 0, gpus, addr, port, nodes, job)
    return Plan(mode, tasks, rank, local, 1, addr, port, nodes, job)


def detect(num_gpus=None, environ=None):
    """The Plan of this launch (see the module's docstring for the order)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        mode = "submitit" if "SUBMITIT_EXECUTOR" in env else "torchrun"
        return Plan(
            mode,
            int(env["WORLD_SIZE"]),
            int(env["RANK"]),
            int(env.get("LOCAL_RANK", 0)),
            1,
            env.get("MASTER_ADDR", "127.0.0.1"),
            int(env.get("MASTER_PORT", 29500)),
            max(int(env["WORLD_SIZE"]) // int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])), 1),
            "the other processes of the torchrun (RANK/WORLD_SIZE)",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SUBMITIT_EXECUTOR" not in env:
        tasks = int(env["SLURM_NTASKS"])
        nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", 1))))
        nodelist = env.get("SLURM_STEP_NODELIST", env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        return _per_node(
            "srun",
            tasks,
            nodes,
            int(env.get("SLURM_NODEID", 0)),
            int(env["SLURM_PROCID"]),
            int(env.get("SLURM_LOCALID", 0)),
            num_gpus,
            env.get("MASTER_ADDR") or first_host(nodelist),
            int(env.get("MASTER_PORT") or _job_port(env.get("SLURM_JOB_ID", ""))),
            f"the other tasks of SLURM job {env.get('SLURM_JOB_ID', '?')} (SLURM_NTASKS={tasks})",
        )
    if "SUBMITIT_EXECUTOR" in env:
        import submitit

        job = submitit.JobEnvironment()
        return _per_node(
            "submitit",
            job.num_tasks,
            job.num_nodes,
            job.node,
            job.global_rank,
            job.local_rank,
            num_gpus,
            env.get("MASTER_ADDR") or job.hostnames[0],
            int(env.get("MASTER_PORT") or _job_port(job.job_id)),
            f"the other tasks of submitit job {job.job_id} ({job.num_tasks} tasks)",
        )
    processes = num_gpus or max(_visible_gpus(), 1)
    return Plan("spawn" if processes > 1 else "single process", processes, 0, 0, processes, "127.0.0.1", 0)


def _timeout_s():
    text = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise LaunchError(f"{TIMEOUT_VARIABLE}={text}: must be a number of seconds greater than 0")
    return value


def _agent_store(plan):
    """Whether torchrun's agent serves the store at the master's address (as torch's env:// reads it)."""
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and os.environ.get("MASTER_ADDR") == plan.master_addr
        and os.environ.get("MASTER_PORT") == str(plan.master_port)
    )


def _rendezvous(plan, rank, timeout_s):
    """The store every process of `plan` has joined; LaunchError naming the missing ones otherwise."""
    where = f"{plan.master_addr}:{plan.master_port}"
    missing = f"; check that {plan.job} started and reach {where}" if plan.job else ""
    deadline = time.monotonic() + timeout_s
    try:
        store = dist.TCPStore(
            plan.master_addr,
            plan.master_port,
            plan.world_size,
            is_master=rank == 0 and not _agent_store(plan),
            timeout=timedelta(seconds=timeout_s),
            wait_for_workers=False,
            multi_tenant=True,
        )
        # torchrun's store outlives a restart of its workers: count each attempt apart.
        key = f"launch/{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}/joined"
        joined = store.add(key, 1)
        while joined < plan.world_size and time.monotonic() < deadline:
            time.sleep(0.05)
            joined = store.add(key, 0)
    except (RuntimeError, OSError) as error:  # torch's DistError family derives from RuntimeError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LaunchError(
            f"{plan.mode}: rank {rank} of {plan.world_size} could not reach the master at {where} within "
            f"{timeout_s:g} s ({reason}){missing} ({TIMEOUT_VARIABLE} sets the wait)"
        ) from None
    if joined < plan.world_size:
        raise LaunchError(
            f"{plan.mode}: only {joined} of {plan.world_size} processes joined at {where} within {timeout_s:g} s"
            f"{missing} ({TIMEOUT_VARIABLE} sets the wait)"
        )
    # Met: from here the group's own operations (NCCL's first communicator, say) get torch's usual wait.
    store.set_timeout(default_pg_timeout)
    return store


def _device_name(device):
    return f"GPU {device.index} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "CPU"


def _run_process(plan, index, fn, args):
    """Process `index` of those `plan` starts here: joins the group, runs fn, leaves the group."""
    rank, local_rank = plan.first_rank + index, plan.first_local_rank + index
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    print(
        f"launch: {plan.mode}, rank {rank} of world size {plan.world_size}, {_device_name(device)}",
        flush=True,
    )
    grouped = plan.world_size > 1
    if grouped:
        store = _rendezvous(plan, rank, _timeout_s())
        # The prefix torch's own rendezvous gives the default group's keys in a store others may share.
        store = dist.PrefixStore("default_pg", store)
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=plan.world_size)
    try:
        return fn(Process(plan.mode, rank, plan.world_size, local_rank, device), *args)
    finally:
        if grouped and dist.is_initialized():
            dist.destroy_process_group()


def _spawned(index, plan, fn, args):
    # mp.spawn passes its start method on to the processes it starts; their DataLoader workers fork,
    # as in any other process on Linux (pretraining's view transforms hold lambdas, which spawn cannot pickle).
    mp.set_start_method("fork", force=True)
    try:
        _run_process(plan, index, fn, args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def launch(fn, *args, num_gpus=None, plan=None, stop_signals=()):
    """fn(Process, *args) in every process of the run that `plan` (default: detect(num_gpus)) describes;
    returns fn's result where it ran in this process. Spawned processes get `stop_signals` forwarded
    from this one (a scheduler's preemption warning reaches the launcher only)."""
    plan = plan or detect(num_gpus)
    if plan.processes == 1:
        return _run_process(plan, 0, fn, args)
    if plan.master_port == 0:
        plan = replace(plan, master_port=_free_port())
    context = mp.spawn(_spawned, args=(plan, fn, args), nprocs=plan.processes, join=False)

    def forward_signal(signum, frame):
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    for signum in stop_signals:
        signal.signal(signum, forward_signal)
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as error:
        if error.exit_code == 2:  # the process printed its error line
            sys.exit(2)
        raise
    return None
