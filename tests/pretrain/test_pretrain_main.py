"""`python pretrain/main.py` end to end on tiny runs: presets, outputs, exact resume, bad input."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.errors import CheckpointError, ConfigError, DatasetError, RecordMismatchError
from pretrain.main import main, parse_args, setup
from pretrain.run_state import find_resume_checkpoint, load_checkpoint, save_checkpoint
from pretrain.schedule import learning_rate

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "pretrain" / "configs").glob("*.yaml"))


def tiny(root, output_dir, *extra):
    """resnet18 on 32 px key/weak and 24 px strong crops, global batch 8, queue 16, 10 iterations/epoch."""
    return [
        "--config-file",
        str(REPO / "pretrain/configs/clsa_single.yaml"),
        "DATA.ROOT",
        str(root),
        "OUTPUT_DIR",
        str(output_dir),
        "MODEL.ARCH",
        "resnet18",
        "MODEL.DIM",
        "16",
        "MODEL.MLP_HIDDEN",
        "32",
        "MODEL.QUEUE_SIZE",
        "16",
        "SOLVER.BATCH_SIZE",
        "8",
        "DATA.NUM_WORKERS",
        "0",
        "DATA.KEY_VIEW",
        "[32, 0.2, 1.0]",
        "DATA.WEAK_VIEWS",
        "[[32, 0.2, 1.0]]",
        "DATA.STRONG_VIEWS",
        "[[24, 0.086, 0.429]]",
        "LOG_PERIOD",
        "2",
        *extra,
    ]


@pytest.fixture(scope="module")
def train_root(synthetic_root):
    return synthetic_root / "imagenet" / "train"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_with_paper_defaults_and_its_views(preset):
    cfg = setup(parse_args(["--config-file", str(preset)]), world_size=8)
    assert cfg.OUTPUT_DIR.endswith(preset.stem) and cfg.DATA.KEY_VIEW == [224, 0.2, 1.0]
    assert (
        cfg.MODEL.QUEUE_SIZE,
        cfg.MODEL.MOMENTUM,
        cfg.MODEL.TEMPERATURE,
        cfg.MODEL.DDM_TEMPERATURE,
        cfg.MODEL.DDM_WEIGHT,
        cfg.MODEL.DIM,
        cfg.MODEL.MLP_HIDDEN,
    ) == (65536, 0.999, 0.2, 0.2, 1.0, 128, 2048)
    assert (
        cfg.SOLVER.BATCH_SIZE,
        cfg.SOLVER.BASE_LR,
        cfg.SOLVER.MOMENTUM,
        cfg.SOLVER.WEIGHT_DECAY,
        cfg.SOLVER.EPOCHS,
    ) == (256, 0.03, 0.9, 1e-4, 200)
    expected_loss = (
        "contrastive"
        if preset.stem in ("mocov2_strong_query", "mocov2_strong_query_key", "clsa_single_contrastive")
        else "ddm"
    )
    assert cfg.MODEL.STRONG_LOSS == expected_loss


def test_learning_rate_scales_with_batch_warms_up_and_decays_to_zero():
    cfg = setup(
        parse_args(
            ["SOLVER.BATCH_SIZE", "512", "SOLVER.EPOCHS", "10", "SOLVER.WARMUP_EPOCHS", "1", "MODEL.QUEUE_SIZE", "1024"]
        ),
        world_size=1,
    )
    assert learning_rate(cfg, 9, iters_per_epoch=10) == pytest.approx(0.06)  # end of warmup: 0.03 * 512/256
    assert learning_rate(cfg, 4, iters_per_epoch=10) == pytest.approx(0.03)
    assert learning_rate(cfg, 10, iters_per_epoch=10) == pytest.approx(0.06)
    assert learning_rate(cfg, 55, iters_per_epoch=10) == pytest.approx(0.03)  # half-way through the cosine
    assert learning_rate(cfg, 99, iters_per_epoch=10) < 1e-3


def test_unknown_config_key_is_a_clear_error():
    with pytest.raises(ConfigError, match="MODEL.QUEUE_SIZ.*pretrain/config.py"):
        setup(parse_args(["MODEL.QUEUE_SIZ", "4096"]), world_size=1)


def test_queue_not_a_multiple_of_the_global_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"QUEUE_SIZE \(1000\).*SOLVER.BATCH_SIZE \(256\)"):
        setup(parse_args(["MODEL.QUEUE_SIZE", "1000"]), world_size=1)
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        setup(parse_args([]), world_size=3)


def test_missing_data_root_fails_before_training(tmp_path):
    with pytest.raises(DatasetError, match="does-not-exist"):
        main(parse_args(tiny(tmp_path / "does-not-exist", tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def tiny_checkpoint(output_dir, iteration):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return save_checkpoint(output_dir, f"model_{iteration:07d}", model, optimizer, iteration, 0, "SEED: 0\n")


def test_truncated_checkpoint_is_named_and_resume_falls_back_to_the_previous_one(tmp_path, caplog):
    older, newer = tiny_checkpoint(tmp_path, 4), tiny_checkpoint(tmp_path, 9)
    newer.write_bytes(newer.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="model_0000009.pth: truncated or corrupt PyTorch checkpoint"):
        load_checkpoint(newer)
    path, checkpoint = find_resume_checkpoint(tmp_path)
    assert path == older and checkpoint["iteration"] == 4
    assert "model_0000009.pth" in caplog.text
    older.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        find_resume_checkpoint(tmp_path)


def test_checkpoint_loads_with_weights_only(tmp_path):
    checkpoint = torch.load(tiny_checkpoint(tmp_path, 0), weights_only=True)
    assert checkpoint["kind"] == "clsa-suite/pretrain" and isinstance(checkpoint["rng"]["torch"], torch.Tensor)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


def final_state(output_dir):
    return torch.load(Path(output_dir) / "model_final.pth", weights_only=True)


def test_run_writes_detectron2_style_outputs(train_root, tmp_path):
    main(parse_args(tiny(train_root, tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD_ITERS", "2")))
    assert "views made per image in DataLoader workers" in (tmp_path / "log.txt").read_text()  # auto, no GPU
    assert "shuffle-BN" in (tmp_path / "log.txt").read_text() and "no-op" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert (tmp_path / "model_0000001.pth").exists() and (tmp_path / "config.yaml").exists()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    lines = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 3]
    assert {"loss", "loss_contrastive", "loss_ddm", "top1", "lr", "img_per_s", "data_time"} <= set(lines[0])
    checkpoint = final_state(tmp_path)
    assert checkpoint["iteration"] == 3 and checkpoint["model"]["queue_ptr"].item() == 0  # 4 x 8 keys, K 16
    assert "resnet18" in checkpoint["config"]


# 80 synthetic images, global batch 12: 6 iterations per epoch, so 8 iterations cross an epoch.
RESUME = ("SOLVER.BATCH_SIZE", "12", "MODEL.QUEUE_SIZE", "24")


@pytest.fixture(scope="module")
def straight_run(train_root, tmp_path_factory):
    """8 iterations without interruption."""
    output_dir = tmp_path_factory.mktemp("straight")
    main(parse_args(tiny(train_root, output_dir, *RESUME, "SOLVER.MAX_ITER", "8")))
    return final_state(output_dir)


def assert_bitwise_equal(straight, resumed):
    assert straight["iteration"] == resumed["iteration"] == 7
    assert straight["model"].keys() == resumed["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


@pytest.mark.slow
def test_resume_mid_epoch_is_bitwise_equal_to_an_uninterrupted_run(train_root, tmp_path, straight_run):
    """8 iterations straight vs 3 + resume + 5 (iteration 3 is mid-epoch 0; the run crosses into epoch 1)."""
    main(parse_args(tiny(train_root, tmp_path, *RESUME, "SOLVER.MAX_ITER", "3")))
    main(parse_args(["--resume", "auto", *tiny(train_root, tmp_path, *RESUME, "SOLVER.MAX_ITER", "8")]))
    assert_bitwise_equal(straight_run, final_state(tmp_path))


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
def test_sigterm_saves_at_a_step_boundary_exits_0_and_resumes_exactly(train_root, tmp_path, straight_run, target):
    """DataLoader workers (2 of them) get the signal too when the whole group is signalled; they must
    outlive the save. The views do not depend on the worker count, so the resumed run equals the
    straight one made without workers."""
    args = tiny(train_root, tmp_path, *RESUME, "SOLVER.MAX_ITER", "8", "LOG_PERIOD", "1", "DATA.NUM_WORKERS", "2")
    process = start_and_wait_for_metrics([sys.executable, str(REPO / "pretrain/main.py"), *args], tmp_path)
    signal_job(process, target)
    assert process.wait(timeout=240) == 0, process.stderr.read().decode()[-3000:]
    assert_saved_on_stop(tmp_path, 8)
    main(parse_args(["--resume", "auto", *args]))
    assert_bitwise_equal(straight_run, final_state(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["num_gpus", "torchrun"])
def test_sigterm_to_every_process_of_a_two_process_run_saves_at_a_step_boundary(train_root, tmp_path, launcher):
    """Two gloo processes, each with a DataLoader worker, started by main.py itself (--num-gpus 2: one
    process group) or by torchrun (which puts each process in a session of its own, so a scheduler
    reaches them one by one). torchrun itself reports the signal with exit code 1 after its processes
    saved and ended; main.py's launcher exits 0."""
    args = tiny(train_root, tmp_path, *RESUME, "SOLVER.MAX_ITER", "30", "LOG_PERIOD", "1", "DATA.NUM_WORKERS", "1")
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


@pytest.mark.slow
def test_batched_views_train_and_resume_bitwise_equal(train_root, tmp_path):
    """DATA.AUGMENT batched on the CPU: the views come from (seed, epoch, image index), so 8 iterations
    straight equal 3 + resume + 5, and differ from the workers path's views."""
    batched = (*RESUME, "DATA.AUGMENT", "batched", "DATA.NUM_WORKERS", "1")
    main(parse_args(tiny(train_root, tmp_path / "straight", *batched, "SOLVER.MAX_ITER", "8")))
    assert "views made in batches on cpu" in (tmp_path / "straight" / "log.txt").read_text()
    main(parse_args(tiny(train_root, tmp_path / "resumed", *batched, "SOLVER.MAX_ITER", "3")))
    main(parse_args(["--resume", "auto", *tiny(train_root, tmp_path / "resumed", *batched, "SOLVER.MAX_ITER", "8")]))
    straight = final_state(tmp_path / "straight")
    assert_bitwise_equal(straight, final_state(tmp_path / "resumed"))
    assert torch.isfinite(straight["model"]["queue"]).all()


def test_augment_defaults_to_workers_without_gpu_and_rejects_unknown_values(train_root, tmp_path):
    assert setup(parse_args(tiny(train_root, tmp_path)), 1).DATA.AUGMENT == "auto"
    with pytest.raises(ValueError, match="DATA.AUGMENT 'gpu' is not one of"):
        setup(parse_args(tiny(train_root, tmp_path, "DATA.AUGMENT", "gpu")), 1)


@pytest.fixture(scope="module")
def one_iteration_run(train_root, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("one_iteration")
    main(parse_args(tiny(train_root, output_dir, "SOLVER.MAX_ITER", "1")))
    return output_dir


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
    train_root, one_iteration_run, tmp_path, overrides, differing, resume
):
    output_dir = one_iteration_run if resume == "auto" else tmp_path
    config_before = (one_iteration_run / "config.yaml").read_text()
    resume = resume if resume == "auto" else str(one_iteration_run / resume)
    # MAX_ITER 1: a resume that wrongly went ahead would find the run finished rather than train.
    args = tiny(train_root, output_dir, "MODEL.QUEUE_SIZE", "16", "SOLVER.MAX_ITER", "1", *overrides)
    with pytest.raises(RecordMismatchError) as error:
        main(parse_args(["--resume", resume, *args]))
    message = str(error.value)
    assert message.startswith(f"{one_iteration_run / 'model_final.pth'}: written by another run")
    assert f"({differing});" in message and "new OUTPUT_DIR" in message and "\n" not in message
    assert (one_iteration_run / "config.yaml").read_text() == config_before
    assert final_state(one_iteration_run)["iteration"] == 0


def test_non_finite_loss_stops_naming_the_iteration_and_saves_nothing(train_root, tmp_path):
    with pytest.raises(FloatingPointError, match="iteration 0.*no checkpoint was saved .*start again"):
        main(parse_args(tiny(train_root, tmp_path, "SOLVER.MAX_ITER", "2", "MODEL.TEMPERATURE", "0.0")))
    assert not list(tmp_path.glob("*.pth"))


def test_divergence_saves_nothing_names_the_last_good_checkpoint_and_a_lower_lr_resumes_from_it(train_root, tmp_path):
    """lr 1e30 leaves finite weights of ~1e28 after a step whose loss was finite; the next step
    overflows. Such a state is not saved, and resuming as the message advises trains on."""
    every_step = ("SOLVER.CHECKPOINT_PERIOD_ITERS", "1")
    main(parse_args(tiny(train_root, tmp_path, "SOLVER.MAX_ITER", "2", *every_step)))
    good = tmp_path / "model_final.pth"
    with pytest.raises(FloatingPointError) as error:
        main(
            parse_args(
                [
                    "--resume",
                    "auto",
                    *tiny(train_root, tmp_path, "SOLVER.MAX_ITER", "4", *every_step, "SOLVER.BASE_LR", "1e30"),
                ]
            )
        )
    assert f"the last good checkpoint is {good}: lower SOLVER.BASE_LR" in str(error.value)
    assert "--resume auto" in str(error.value) and "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000000.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    main(parse_args(["--resume", "auto", *tiny(train_root, tmp_path, "SOLVER.MAX_ITER", "4", *every_step)]))
    resumed = final_state(tmp_path)
    assert resumed["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in resumed["model"].values() if v.is_floating_point())


def test_a_checkpoint_with_non_finite_weights_is_refused_and_resume_falls_back(tmp_path):
    older, newer = tiny_checkpoint(tmp_path, 4), tiny_checkpoint(tmp_path, 9)
    checkpoint = torch.load(newer, weights_only=True)
    checkpoint["model"]["weight"][0, 0] = float("nan")
    torch.save(checkpoint, newer)
    with pytest.raises(CheckpointError, match="model_0000009.pth: weight is not finite"):
        load_checkpoint(newer)
    assert find_resume_checkpoint(tmp_path)[0] == older


@pytest.mark.slow
def test_two_cpu_processes_through_main(train_root, tmp_path):
    main(parse_args(["--num-gpus", "2", *tiny(train_root, tmp_path, "SOLVER.MAX_ITER", "3")]))
    checkpoint = final_state(tmp_path)
    assert checkpoint["iteration"] == 2 and checkpoint["model"]["queue_ptr"].item() == 8  # 3 x 8 keys mod 16
    assert "2 process(es)" in (tmp_path / "log.txt").read_text()


def test_resume_from_a_missing_file_says_it_is_missing(train_root, tmp_path):
    from pretrain.main import configure

    missing = tmp_path / "missing.pth"
    with pytest.raises(ConfigError, match=f"--resume {missing}: no such file"):
        configure(parse_args(["--resume", str(missing), *tiny(train_root, tmp_path)]))
    with pytest.raises(CheckpointError, match=f"{missing}: no such file"):
        load_checkpoint(missing)


def test_a_users_mistake_is_one_line_on_stderr_and_exit_code_2(train_root, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "pretrain/main.py"), *tiny(train_root, tmp_path / "out", "SOLVER.BATCH_SIZE", "0")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: SOLVER.BATCH_SIZE is 0; it must be greater than 0"
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_resume_after_kill_9_removes_stale_temp_files_and_logs_each_iteration_once(train_root, tmp_path):
    """A kill -9 after iteration 2's metrics line, while its checkpoint was being written, leaves a
    temporary checkpoint and lines the resumed run writes again (the last one cut short)."""
    args = tiny(train_root, tmp_path, "LOG_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD_ITERS", "1")
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


class _EmbeddedCode:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_a_checkpoint_with_embedded_code_is_refused_as_unsafe_not_called_truncated(tmp_path):
    path = tmp_path / "model_0000001.pth"
    torch.save({"kind": "clsa-suite/pretrain", "model": _EmbeddedCode()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "holds objects that safe loading (weights_only=True) refuses" in message, message
    assert "truncated" not in message and "print" in message and "\n" not in message


def test_a_root_of_only_unreadable_images_fails_before_anything_is_written(tmp_path):
    for name in ("a/1.jpg", "b/2.jpg"):
        (tmp_path / "root" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / name).write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DatasetError, match="none of its 2 images can be read"):
        main(parse_args(tiny(tmp_path / "root", tmp_path / "out")))
    assert not (tmp_path / "out").exists()
