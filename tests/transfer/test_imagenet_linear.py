import json
import subprocess
import sys

import pytest
import torch
import torchvision

from common.backbone import load_backbone
from common.errors import RecordMismatchError
from transfer.cli import load_resume_state
from transfer.imagenet_linear import BackboneChanged, build_model, check_backbone_unchanged, preset_lr


def linear_eval(weights, data, *args, launcher=(sys.executable,), check=False):
    """`transfer/imagenet_linear.py --weights weights --data data *args`, finished."""
    argv = [*launcher, "transfer/imagenet_linear.py", "--weights", weights, "--data", data, *args]
    return subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, check=check)


@pytest.fixture
def r18_weights(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_sanity_check_fires_when_a_backbone_weight_changes(r18_weights):
    model, reference = build_model(load_backbone(r18_weights), num_classes=10)
    with torch.no_grad():
        model.fc.weight += 1.0  # fc is meant to learn: no alarm
    check_backbone_unchanged(model, reference)
    with torch.no_grad():
        model.layer3[0].conv2.weight[0, 0, 0, 0] += 1e-6
    with pytest.raises(BackboneChanged, match="layer3.0.conv2.weight"):
        check_backbone_unchanged(model, reference)


def test_only_fc_trains_and_it_starts_at_n0_001(r18_weights):
    model, _ = build_model(load_backbone(r18_weights), num_classes=1000)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert abs(model.fc.weight.std().item() - 0.01) < 1e-3 and model.fc.bias.abs().max() == 0


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


@pytest.mark.parametrize(
    "sha, preset, epochs, differing",
    [
        ("abc", "moco", 100, "--preset 'clsa' -> 'moco'"),
        ("abc", "clsa", 90, "--epochs 100 -> 90"),
        ("xyz", "clsa", 100, "--weights (sha256) 'abc' -> 'xyz'"),
    ],
)
def test_resume_refuses_a_checkpoint_of_other_weights_preset_or_length(tmp_path, sha, preset, epochs, differing):
    path = tmp_path / "checkpoint.pth"
    torch.save({"weights_sha256": "abc", "preset": "clsa", "epochs": 100, "fc": {}}, path)
    assert load_resume_state(path, "abc", preset="clsa", epochs=100)["epochs"] == 100
    with pytest.raises(RecordMismatchError) as error:
        load_resume_state(path, sha, preset=preset, epochs=epochs)
    assert str(error.value) == (
        f"{path}: written by another run ({differing}); rerun with those or use another --output-dir"
    )


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
