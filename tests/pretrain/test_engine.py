"""`pretrain/engine.py` on tiny runs: the outputs, exact resume (after a stop signal or a kill -9), and a
checkpoint of another run refused."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.errors import RecordMismatchError
from pretrain.main import main, parse_args
from pretrain.run_state import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_run_writes_detectron2_style_outputs(tiny_pretrain, tiny_pretrained):
    """4 iterations, a checkpoint every 2."""
    log = (tiny_pretrained / "log.txt").read_text()
    assert "views made per image in DataLoader workers" in log  # auto, no GPU
    assert "shuffle-BN" in log and "no-op" in log
    assert "environment: torch" in log and "config sha256" in log
    assert re.search(r"eta: 0:00:00  epoch: \d+/\d+  iter: 3/4  instance_acc: .* img/s: .* max_rss: \d+M", log)
    assert (tiny_pretrained / "last_checkpoint").read_text() == "model_final.pth"
    assert (tiny_pretrained / "model_0000001.pth").exists() and (tiny_pretrained / "config.yaml").exists()
    assert list(tiny_pretrained.glob("events.out.tfevents.*"))
    lines = [json.loads(line) for line in (tiny_pretrained / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 3]
    assert {"loss", "loss_contrastive", "loss_ddm", "instance_acc", "lr", "img_per_s", "data_time"} <= set(lines[0])
    checkpoint = tiny_pretrain.final_state(tiny_pretrained)
    assert checkpoint["iteration"] == 3 and checkpoint["model"]["queue_ptr"].item() == 0  # 4 x 8 keys, K 16
    assert "resnet18" in checkpoint["config"]


@pytest.mark.slow
def test_resume_mid_epoch_is_bitwise_equal_to_an_uninterrupted_run(train_root, tiny_pretrain, tmp_path, straight_run):
    """8 iterations straight vs 3 + resume + 5 (iteration 3 is mid-epoch 0; the run crosses into epoch 1)."""
    resume = tiny_pretrain.RESUME
    main(parse_args(tiny_pretrain.args(train_root, tmp_path, *resume, "SOLVER.MAX_ITER", "3")))
    main(parse_args(["--resume", "auto", *tiny_pretrain.args(train_root, tmp_path, *resume, "SOLVER.MAX_ITER", "8")]))
    tiny_pretrain.assert_bitwise_equal(straight_run, tiny_pretrain.final_state(tmp_path))


@pytest.mark.slow
def test_batched_views_train_and_resume_bitwise_equal(train_root, tiny_pretrain, tmp_path):
    """DATA.AUGMENT batched on the CPU: the views come from (seed, epoch, image index), so 8 iterations
    straight equal 3 + resume + 5."""
    batched = (*tiny_pretrain.RESUME, "DATA.AUGMENT", "batched", "DATA.NUM_WORKERS", "1")

    def run(output_dir, max_iter, *resume):
        main(parse_args([*resume, *tiny_pretrain.args(train_root, output_dir, *batched, "SOLVER.MAX_ITER", max_iter)]))

    run(tmp_path / "straight", "8")
    assert "views made in batches on cpu" in (tmp_path / "straight" / "log.txt").read_text()
    run(tmp_path / "resumed", "3")
    run(tmp_path / "resumed", "8", "--resume", "auto")
    straight = tiny_pretrain.final_state(tmp_path / "straight")
    tiny_pretrain.assert_bitwise_equal(straight, tiny_pretrain.final_state(tmp_path / "resumed"))
    assert torch.isfinite(straight["model"]["queue"]).all()


def test_resume_after_kill_9_removes_stale_temp_files_and_logs_each_iteration_once(train_root, tiny_pretrain, tmp_path):
    """A kill -9 after iteration 2's metrics line, while its checkpoint was being written, leaves a
    temporary checkpoint and lines the resumed run writes again (the last one cut short)."""
    args = tiny_pretrain.args(train_root, tmp_path, "LOG_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD_ITERS", "1")
    main(parse_args([*args, "SOLVER.MAX_ITER", "2"]))
    with open(tmp_path / "metrics.json", "a") as f:
        f.write(json.dumps({"iteration": 2, "loss": 1.0}) + "\n" + '{"iteration": 3, "lo')
    stale = tmp_path / ".model_0000002.pth.k2j4x.tmp"
    stale.write_bytes(b"\0" * 1024)
    main(parse_args(["--resume", "auto", *args, "SOLVER.MAX_ITER", "4"]))
    assert not stale.exists()
    lines = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [0, 1, 2, 3]
    assert lines[2]["loss"] != 1.0


@pytest.mark.parametrize(
    "overrides, differing",
    [
        (("DATA.STRONG_VIEWS", "[]"), "DATA.STRONG_VIEWS [[24, 0.086, 0.429]] -> []"),  # the same weight shapes
        (("SOLVER.BATCH_SIZE", "16"), "SOLVER.BATCH_SIZE 8 -> 16"),  # another lr schedule and sampler position
        (("MODEL.ARCH", "resnet34", "SEED", "1"), "MODEL.ARCH 'resnet18' -> 'resnet34'; SEED 0 -> 1"),
    ],
)
@pytest.mark.parametrize("resume", ["auto", "model_final.pth"])
def test_resuming_a_checkpoint_of_another_run_stops_naming_the_file_and_keys(
    train_root, tiny_pretrain, tiny_pretrained, tmp_path, overrides, differing, resume
):
    output_dir = tiny_pretrained if resume == "auto" else tmp_path
    config_before = (tiny_pretrained / "config.yaml").read_text()
    resume = resume if resume == "auto" else str(tiny_pretrained / resume)
    # The run's own MAX_ITER: a resume that wrongly went ahead would find the run finished rather than train.
    args = tiny_pretrain.args(train_root, output_dir, "MODEL.QUEUE_SIZE", "16", "SOLVER.MAX_ITER", "4", *overrides)
    with pytest.raises(RecordMismatchError) as error:
        main(parse_args(["--resume", resume, *args]))
    message = str(error.value)
    assert message.startswith(f"{tiny_pretrained / 'model_final.pth'}: written by another run")
    assert f"({differing});" in message and "new OUTPUT_DIR" in message and "\n" not in message
    assert (tiny_pretrained / "config.yaml").read_text() == config_before
    assert tiny_pretrain.final_state(tiny_pretrained)["iteration"] == 3
    if output_dir == tmp_path:  # a new folder: the refusal leaves nothing in it but the run's lock file
        assert [path.name for path in tmp_path.iterdir()] == [".lock"]


def start_and_wait_for_metrics(cmd, output_dir):
    """Starts `cmd` in a session of its own (as a scheduler starts a job) and returns it once it logged
    its first iteration, i.e. mid-run with its DataLoader workers up."""
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    metrics = Path(output_dir) / "metrics.json"
    while not (metrics.exists() and metrics.read_text().strip()):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    return process


def descendants(pid):
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children += [int(c) for c in (task / "children").read_text().split()]
    return children + [d for c in children for d in descendants(c)]


def signal_job(process, target):
    """SIGTERM to the main process alone, to its process group (kill -TERM -- -PGID), or to every process
    it started, whatever their session (what SLURM does to a job step)."""
    if target == "main":
        process.send_signal(signal.SIGTERM)
    elif target == "group":
        os.killpg(process.pid, signal.SIGTERM)
    else:
        for pid in [process.pid, *descendants(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def assert_saved_on_stop(output_dir, max_iter):
    stopped_at = load_checkpoint(output_dir / (output_dir / "last_checkpoint").read_text())
    assert stopped_at["iteration"] < max_iter - 1
    assert f"stop signal: saved iteration {stopped_at['iteration']}" in (output_dir / "log.txt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["main", "group"])
def test_sigterm_saves_at_a_step_boundary_exits_0_and_resumes_exactly(
    train_root, tiny_pretrain, tmp_path, straight_run, target
):
    """DataLoader workers (2 of them) get the signal too when the whole group is signalled; they must
    outlive the save. The views do not depend on the worker count, so the resumed run equals the
    straight one made without workers."""
    args = tiny_pretrain.args(
        train_root, tmp_path, *tiny_pretrain.RESUME, "SOLVER.MAX_ITER", "8", "LOG_PERIOD", "1", "DATA.NUM_WORKERS", "2"
    )
    process = start_and_wait_for_metrics([sys.executable, str(REPO / "pretrain/main.py"), *args], tmp_path)
    signal_job(process, target)
    assert process.wait(timeout=240) == 0, process.stderr.read().decode()[-3000:]
    assert_saved_on_stop(tmp_path, 8)
    main(parse_args(["--resume", "auto", *args]))
    tiny_pretrain.assert_bitwise_equal(straight_run, tiny_pretrain.final_state(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["num_gpus", "torchrun"])
def test_sigterm_to_every_process_of_a_two_process_run_saves_at_a_step_boundary(
    train_root, tiny_pretrain, tmp_path, launcher
):
    """Two gloo processes, each with a DataLoader worker, started by main.py itself (--num-gpus 2: one
    process group) or by torchrun (which puts each process in a session of its own, so a scheduler
    reaches them one by one). torchrun itself reports the signal with exit code 1 after its processes
    saved and ended; main.py's launcher exits 0."""
    args = tiny_pretrain.args(
        train_root, tmp_path, *tiny_pretrain.RESUME, "SOLVER.MAX_ITER", "30", "LOG_PERIOD", "1", "DATA.NUM_WORKERS", "1"
    )
    script = str(REPO / "pretrain/main.py")
    cmd = (
        [sys.executable, script, "--num-gpus", "2"]
        if launcher == "num_gpus"
        else [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", script]
    )
    process = start_and_wait_for_metrics([*cmd, *args], tmp_path)
    signal_job(process, "group" if launcher == "num_gpus" else "every")
    code = process.wait(timeout=240)
    stderr = process.stderr.read().decode()
    assert "exited unexpectedly" not in stderr and "killed by signal" not in stderr, stderr[-3000:]
    assert code == (0 if launcher == "num_gpus" else 1), stderr[-3000:]
    assert_saved_on_stop(tmp_path, 30)
