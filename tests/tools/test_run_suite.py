import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision


REPO = Path(__file__).resolve().parents[2]


def _suite(*args, cwd=None):
    return subprocess.run([sys.executable, str(REPO / "tools/run_suite.py"), *args], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


def test_a_second_run_with_the_same_checkpoint_runs_no_stage(checkpoint, tmp_path):
    first = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "convert,report")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "convert: done" in first.stdout and (tmp_path / "convert" / "model_d2.pkl").is_file()
    assert "VOC07+12 detection not run" in (tmp_path / "report.md").read_text()
    stamp = json.loads((tmp_path / "convert" / "stage.json").read_text())
    assert stamp["weights_sha256"] and stamp["command"][-1].endswith("model_d2.pkl")

    second = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "convert,report")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "convert: already done for this checkpoint, skipped" in second.stdout


def test_results_of_another_checkpoint_or_profile_are_never_reused_or_overwritten(checkpoint, tmp_path):
    assert _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "convert").returncode == 0
    other = tmp_path.parent / "other.pth"
    torch.save(torchvision.models.resnet50().state_dict(), other)
    clash = _suite("--weights", str(other), "--out", str(tmp_path), "--only", "convert")
    assert clash.returncode != 0 and "holds results of another run" in clash.stderr
    stamp = json.loads((tmp_path / "convert" / "stage.json").read_text())
    from common.io import sha256_file

    assert stamp["weights_sha256"] == sha256_file(checkpoint), "the first run's results must be kept"


def test_a_failed_stage_is_recorded_and_the_run_fails(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    proc = _suite("--weights", str(bad), "--out", str(tmp_path / "suite"), "--only", "convert,report")
    assert proc.returncode != 0 and "failed stages: convert" in proc.stderr
    assert (tmp_path / "suite" / "convert" / "FAILED").read_text().startswith("exit code 2")
    assert (tmp_path / "suite" / "report.md").is_file(), "the report still runs after a failed stage"


def test_relative_paths_are_taken_from_the_callers_folder(checkpoint, tmp_path):
    proc = _suite("--weights", checkpoint.name, "--out", "suite", "--only", "convert", cwd=checkpoint.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (checkpoint.parent / "suite" / "convert" / "model_d2.pkl").is_file()
    assert not (REPO / "suite").exists()


def test_imagenet_knn_stage_runs_with_imagenet_and_fills_its_report_column(checkpoint, tmp_path, synthetic_root):
    refused = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "imagenet_knn")
    assert refused.returncode == 2 and "imagenet_knn needs --imagenet ROOT" in refused.stderr
    proc = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "imagenet_knn,report",
                  "--imagenet", str(synthetic_root / "imagenet"), "--profile", "smoke", "--num-gpus", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    top1 = json.loads((tmp_path / "imagenet_knn" / "results.json").read_text())["metrics"]["top1_k20"]
    extended = json.loads((tmp_path / "report.json").read_text())["ours"][tmp_path.name]["extended"]
    assert extended["ImageNet kNN top-1 (k=20)"]["mean"] == pytest.approx(top1)
