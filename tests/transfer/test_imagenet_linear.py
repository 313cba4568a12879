import json
import subprocess
import sys

import pytest
import torch

from transfer.imagenet_linear import preset_lr


def linear_eval(weights, data, *args, launcher=(sys.executable,), check=False):
    """`transfer/imagenet_linear.py --weights weights --data data *args`, finished."""
    argv = [*launcher, "transfer/imagenet_linear.py", "--weights", weights, "--data", data, *args]
    return subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, check=check)


@pytest.mark.slow
def test_runs_an_epoch_then_resumes_to_the_next(r18_weights, tmp_path, synthetic_root):
    cmd = (
        r18_weights,
        synthetic_root / "imagenet",
        "--output-dir",
        tmp_path / "out",
        "--workers",
        0,
        "--batch-size",
        40,
    )
    linear_eval(*cmd, "--epochs", 1, check=True)
    checkpoint = tmp_path / "out" / "checkpoint.pth"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "epochs": 2}, checkpoint)  # as if a 2-epoch run had stopped after its first epoch
    refused = linear_eval(*cmd, "--epochs", 3)
    assert refused.returncode == 2 and "--epochs 2" in refused.stderr
    second = linear_eval(*cmd, "--epochs", 2, check=True)
    assert "resumed from" in second.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "lr 10.0 with per-epoch cosine decay over 2 epochs" in results["protocol"]
    assert [row["epoch"] for row in results["history"]] == [1, 2]
    assert results["split_sizes"] == {"train": 80, "val": 40, "classes": 10}
    assert 0 <= results["metrics"]["top1_last"] <= results["metrics"]["top5_last"] <= 100


def test_moco_preset_steps_at_60_and_80_and_clsa_preset_is_cosine():
    assert [preset_lr("moco", e, 100) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx([30, 30, 3, 3, 0.3, 0.3])
    assert [preset_lr("clsa", e, 100) for e in (0, 50, 100)] == pytest.approx([10, 5, 0])
    assert preset_lr("clsa", 25, 100) == pytest.approx(10 * (1 + 0.5**0.5) / 2)


def test_corrupt_resume_checkpoint_is_a_one_line_error_naming_it(r18_weights, tmp_path, synthetic_root):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "checkpoint.pth").write_bytes(b"PK\x03\x04 truncated")
    out = linear_eval(r18_weights, synthetic_root / "imagenet", "--output-dir", out_dir, "--workers", 0)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "checkpoint.pth" in out.stderr and "Traceback" not in out.stderr


def test_missing_imagenet_folder_is_a_one_line_error(r18_weights, tmp_path):
    out = linear_eval(r18_weights, tmp_path / "nowhere")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nowhere/train not found" in out.stderr


def test_imagenet_folder_without_class_folders_is_a_one_line_error(r18_weights, tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
    out = linear_eval(r18_weights, tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "train" in out.stderr and "no class folders" in out.stderr


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_share_the_work(r18_weights, tmp_path, synthetic_root):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    linear_eval(
        r18_weights,
        synthetic_root / "imagenet",
        *("--output-dir", tmp_path, "--epochs", 1, "--workers", 0, "--batch-size", 40),
        launcher=torchrun,
        check=True,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["processes"] == 2 and len(results["history"]) == 1
    # Each of the 40 val images is scored exactly once across both processes.
    assert results["history"][0]["val_images"] == 40 == results["split_sizes"]["val"]
