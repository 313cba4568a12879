"""SLURM launch through submitit: the flags, the resubmitted command, and a requeue that changes nothing."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from common import slurm

# submitit's local executor: the real submitit code path, on this machine, without a GPU.
LOCAL_JOB = ("--slurm", "--slurm-cluster", "local", "--gpus-per-node", "0", "--time", "30")


def test_slurm_flags_are_split_from_the_command_wherever_they_are():
    flags, rest = slurm.split_argv(
        [
            "--config-file",
            "a.yaml",
            "--slurm",
            "--nodes",
            "2",
            "--partition",
            "p",
            "--time",
            "60",
            "SOLVER.BATCH_SIZE",
            "512",
        ]
    )
    assert (flags.slurm, flags.nodes, flags.gpus_per_node, flags.partition, flags.time) == (True, 2, 8, "p", 60)
    assert rest == ["--config-file", "a.yaml", "SOLVER.BATCH_SIZE", "512"]


@pytest.mark.parametrize(
    "argv, resume_args, expected",
    [
        (
            ["--config-file", "a.yaml", "X", "1"],
            ["--resume", "auto"],
            ["--resume", "auto", "--config-file", "a.yaml", "X", "1"],
        ),
        (["--resume", "ckpt.pth", "X", "1"], ["--resume", "auto"], ["--resume", "auto", "X", "1"]),
        (["--resume=ckpt.pth", "X", "1"], ["--resume", "auto"], ["--resume", "auto", "X", "1"]),
        (["--resume", "--num-gpus", "2"], ["--resume"], ["--resume", "--num-gpus", "2"]),  # detectron2's flag
        (["--out", "d"], [], ["--out", "d"]),
    ],
)
def test_the_requeued_command_resumes_once(argv, resume_args, expected):
    assert slurm.with_resume(argv, resume_args) == expected


def _task_pids(controller_pid):
    children = Path(f"/proc/{controller_pid}/task/{controller_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


@pytest.mark.slow
def test_a_job_interrupted_once_requeues_resumes_and_ends_as_an_uninterrupted_run(
    synthetic_root, tiny_pretrain, tmp_path
):
    """submitit's local executor runs the real job code: SIGUSR2 (SLURM's time-out warning) mid-run
    makes pretraining save at a step boundary, the job requeues itself with --resume auto, and the
    second job's final weights equal those of a run that was never interrupted."""
    from pretrain.main import main, parse_args

    train_root = synthetic_root / "imagenet" / "train"
    run = (*tiny_pretrain.RESUME, "SOLVER.MAX_ITER", "8", "LOG_PERIOD", "1")
    main(parse_args(tiny_pretrain.args(train_root, tmp_path / "straight", *run)))

    output_dir = tmp_path / "job"
    flags, argv = slurm.split_argv(
        [
            *LOCAL_JOB,
            *tiny_pretrain.args(train_root, output_dir, *run),
        ]
    )
    job = slurm.submit(
        flags,
        slurm.Job("pretrain.main:run_argv", argv, ["--resume", "auto"], task_per_gpu=True, stop_signal=signal.SIGUSR1),
        output_dir,
        "test",
    )
    metrics = output_dir / "metrics.json"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
        assert job.state not in ("FINISHED", "INTERRUPTED") and time.time() < deadline, job.stderr()
        time.sleep(0.2)
    for pid in _task_pids(job._process.pid):
        os.kill(pid, signal.SIGUSR2)
    job.result()  # waits for the requeued job
    log = job.stdout() + (job.stderr() or "")
    assert "Requeued job" in log, log[-3000:]
    assert "stop signal: saved iteration" in (output_dir / "log.txt").read_text()
    assert "resumed from" in (output_dir / "log.txt").read_text()
    assert json.loads(metrics.read_text().splitlines()[-1])["iteration"] == 7
    tiny_pretrain.assert_bitwise_equal(
        tiny_pretrain.final_state(tmp_path / "straight"), tiny_pretrain.final_state(output_dir)
    )
    assert torch.load(output_dir / "model_final.pth", weights_only=True)["iteration"] == 7


def test_run_suite_submits_one_node_and_its_job_runs_the_stages(tmp_path):
    import torchvision

    from tools import run_suite

    checkpoint = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), checkpoint)
    with pytest.raises(SystemExit):
        run_suite.main(["--slurm", "--nodes", "2", "--weights", str(checkpoint), "--out", str(tmp_path / "s")])
    args = [*LOCAL_JOB, "--weights", str(checkpoint), "--out", str(tmp_path / "suite"), "--only", "convert"]
    job = run_suite.main(args)["convert"]
    assert Path(job.paths.stdout).parent.parent == tmp_path / "suite" / "slurm"
    assert run_suite.main(args) == {}, "a job still running is not submitted again"
    job.result()
    assert (tmp_path / "suite" / "convert" / "model_d2.pkl").is_file()


@pytest.fixture
def slurm_commands(tmp_path, monkeypatch):
    """A PATH whose srun, squeue and sacct are scripts: write_command(name, output) sets what one prints."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def write_command(name, output=""):
        (bin_dir / name).write_text(f"#!/bin/sh\nprintf '{output}'\n")
        (bin_dir / name).chmod(0o755)

    write_command("srun")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return write_command


def test_slurm_extra_options_and_dependencies_reach_the_sbatch_script(slurm_commands, tmp_path):
    flags, _ = slurm.split_argv(
        ["--slurm", "--slurm-extra", "qos=high", "--slurm-extra", "mem=64G", "--slurm-extra", "mail-type=END"]
    )
    after = [slurm.recorded_job("slurm", tmp_path, "12"), slurm.recorded_job("slurm", tmp_path, "13")]
    executor = slurm.make_executor(flags, tmp_path, "test", tasks_per_node=1, gpus_per_node=8, after=after)
    script = executor._executor._make_submission_file_text("python job.py", "uid").splitlines()
    for option in ("qos=high", "mem=64G", "mail-type=END", "dependency=afterok:12:13", "kill-on-invalid-dep=yes"):
        assert f"#SBATCH --{option}" in script
    flags, _ = slurm.split_argv(["--slurm", "--slurm-extra", "dependency=afterany:7"])
    executor = slurm.make_executor(flags, tmp_path, "test", tasks_per_node=1, gpus_per_node=8, after=after[:1])
    assert "#SBATCH --dependency=afterany:7,afterok:12" in executor._executor._make_submission_file_text("j", "u")


@pytest.mark.parametrize(
    "value, message",
    [
        ("qos", "'qos' is not KEY=VALUE of an sbatch option"),
        ("=high", "'=high' is not KEY=VALUE"),
        ("mem=", "'mem=' is not KEY=VALUE"),
        ("qos=a\n#SBATCH --x=y", "is not KEY=VALUE"),
        ("partition=p", "partition has a flag of its own: use --partition"),
    ],
)
def test_a_malformed_slurm_extra_is_one_error_line(value, message, capsys):
    from tools import run_suite

    with pytest.raises(SystemExit) as exit_code:
        run_suite.main(["--slurm", "--weights", "w.pth", "--out", "o", "--slurm-extra", value])
    err = capsys.readouterr().err
    assert exit_code.value.code == 2 and err.startswith("error: argument --slurm-extra: ") and message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "squeue, sacct, state",
    [
        ("PENDING\n", "", "queued"),
        ("RUNNING\n", "", "running"),
        ("", "RUNNING\n", "running"),
        ("", "FAILED\n", "ended"),
        ("", "CANCELLED by 42\n", "ended"),
        ("", "", "ended"),
    ],
)
def test_a_recorded_job_state_is_read_from_squeue_then_sacct(slurm_commands, tmp_path, squeue, sacct, state):
    slurm_commands("squeue", squeue)
    slurm_commands("sacct", sacct)
    assert slurm.job_state(slurm.recorded_job("slurm", tmp_path, "12")) == state
