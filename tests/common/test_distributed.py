import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from common import distributed

# One task of an srun step: rank 0 alone writes what the world agreed on.
TASK = """
import json, sys
from common.cli import exit_on_user_error
from common.distributed import all_reduce_sum, launch

def task(process, out):
    total = all_reduce_sum([process.rank + 1], process.device)[0]
    if process.rank == 0:
        with open(f"{out}/rank{process.rank}.json", "w") as f:
            json.dump({"world": process.world_size, "mode": process.mode, "sum_of_ranks_plus_one": total}, f)

exit_on_user_error(launch, task, sys.argv[1])
"""
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def srun_task(procid, ntasks, port, out, timeout_s):
    scheduler = ("SLURM_", "SUBMITIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(scheduler) and k not in LAUNCH_VARIABLES}
    env.update(
        SLURM_PROCID=str(procid),
        SLURM_NTASKS=str(ntasks),
        SLURM_LOCALID=str(procid),
        SLURM_NODEID="0",
        SLURM_NNODES="1",
        SLURM_JOB_NODELIST="localhost",
        SLURM_JOB_ID=str(port - 20000),  # the port is derived from the job id
        CUDA_VISIBLE_DEVICES="",
        **{distributed.TIMEOUT_VARIABLE: str(timeout_s)},
    )
    return subprocess.Popen(
        [sys.executable, "-c", TASK, str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_srun_tasks_form_one_world_of_two_with_one_writer(tmp_path):
    port = free_port()
    tasks = [srun_task(i, 2, port, tmp_path, 60) for i in range(2)]
    outputs = [task.communicate(timeout=120) for task in tasks]
    for rank, (task, (stdout, stderr)) in enumerate(zip(tasks, outputs)):
        assert task.returncode == 0, stderr
        assert stdout.splitlines()[0] == f"launch: srun, rank {rank} of world size 2, CPU"
    assert [p.name for p in tmp_path.iterdir()] == ["rank0.json"]
    assert (tmp_path / "rank0.json").read_text() == '{"world": 2, "mode": "srun", "sum_of_ranks_plus_one": 3.0}'


def test_one_of_two_srun_tasks_ends_with_one_error_line_within_the_timeout(tmp_path):
    start = time.monotonic()
    task = srun_task(0, 2, free_port(), tmp_path, 2)
    stdout, stderr = task.communicate(timeout=60)
    assert task.returncode == 2
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: srun: only 1 of 2 processes joined")
    assert "SLURM_NTASKS=2" in stderr and distributed.TIMEOUT_VARIABLE in stderr
    assert time.monotonic() - start < 60 and not list(tmp_path.iterdir())


@pytest.fixture
def bare_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SLURM_", "SUBMITIT_")) or name in LAUNCH_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # for the processes it starts
    return monkeypatch


TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "29400"}
SRUN = {
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_STEP_NODELIST": "gpu[003-004]",
    "SLURM_JOB_ID": "123456",
}
SUBMITIT_LOCAL = {
    "SUBMITIT_EXECUTOR": "local",
    "SUBMITIT_LOCAL_JOB_ID": "777",
    "SUBMITIT_LOCAL_NTASKS": "2",
    "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
    "SUBMITIT_LOCAL_NODEID": "0",
    "SUBMITIT_LOCAL_GLOBALID": "1",
    "SUBMITIT_LOCAL_LOCALID": "1",
}


@pytest.mark.parametrize(
    "variables, expected",
    [
        ({**SRUN, **TORCHRUN}, ("torchrun", 4, 3, 1, 1, "node7", 29400)),
        ({**SRUN, **SUBMITIT_LOCAL}, ("submitit", 2, 1, 1, 1, socket.gethostname(), 20777)),
        (SRUN, ("srun", 8, 5, 1, 1, "gpu003", 20000 + 123456 % 20000)),
        ({**SRUN, "MASTER_ADDR": "head", "MASTER_PORT": "1234"}, ("srun", 8, 5, 1, 1, "head", 1234)),
        (SUBMITIT_LOCAL, ("submitit", 2, 1, 1, 1, socket.gethostname(), 20777)),
        ({}, ("spawn", 3, 0, 0, 3, "127.0.0.1", 0)),
    ],
)
def test_detection_order_torchrun_then_srun_then_submitit_then_spawn(bare_environment, variables, expected):
    for name, value in variables.items():
        bare_environment.setenv(name, value)
    bare_environment.setattr(distributed.shutil, "which", lambda name: None)  # no scontrol here
    plan = distributed.detect(num_gpus=3 if not variables else None)
    got = (plan.mode, plan.world_size, plan.first_rank, plan.first_local_rank, plan.processes)
    assert (*got, plan.master_addr, plan.master_port) == expected


def test_srun_with_one_task_per_node_starts_a_process_per_gpu(bare_environment):
    for name, value in {**SRUN, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}.items():
        bare_environment.setenv(name, value)
    plan = distributed.detect(num_gpus=4)
    assert (plan.world_size, plan.first_rank, plan.first_local_rank, plan.processes, plan.nodes) == (8, 4, 0, 4, 2)
    assert plan.describe() == "launch: srun, ranks 4-7 of world size 8 on 2 node(s)"


def test_plain_python_without_gpu_is_one_process(bare_environment):
    plan = distributed.detect()
    assert (plan.mode, plan.world_size, plan.processes) == ("single process", 1, 1)


@pytest.mark.parametrize(
    "nodelist, host", [("gpu[003-005,010],cpu1", "gpu003"), ("node7,node8", "node7"), ("a-b[12]", "a-b12")]
)
def test_first_host_of_a_slurm_node_list_without_scontrol(monkeypatch, nodelist, host):
    monkeypatch.setattr(distributed.shutil, "which", lambda name: None)
    assert distributed.first_host(nodelist) == host


def slice_and_gather(process, out):
    data = torch.arange(7 * 3, dtype=torch.float32).view(7, 3)  # 7 rows over 2 processes: uneven slices
    rows = distributed.rank_slice(range(7))
    local = data[list(rows)]
    gathered = distributed.gather_slices(local, len(data))
    torch.save({"rows": list(rows), "gathered": gathered}, f"{out}/rank{process.rank}.pt")


def test_rank_slices_are_disjoint_and_gather_back_in_order(bare_environment, tmp_path):
    distributed.launch(slice_and_gather, str(tmp_path), num_gpus=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["rows"] == [0, 2, 4, 6] and ranks[1]["rows"] == [1, 3, 5]
    for rank in ranks:
        assert torch.equal(rank["gathered"], torch.arange(21, dtype=torch.float32).view(7, 3))
