"""End-to-end runs of the VOC07 scripts on the tiny synthetic VOC2007 with a random ResNet-18."""

import json
import subprocess
import sys

import pytest


def run(script, *args):
    return subprocess.run([sys.executable, f"transfer/{script}", *map(str, args)], capture_output=True, text=True)


def run_cached(script, weights, output_dir, *args):
    """`script` on `weights`, writing to `output_dir` and caching features below it, without workers."""
    return run(
        script, "--weights", weights, "--output-dir", output_dir, "--cache-dir", output_dir / "c", "--workers", 0, *args
    )


@pytest.mark.slow  # a subprocess that imports torch: ~10-40 s on a busy 2-core machine
def test_voc07_svm_end_to_end(r18_weights, tmp_path, synthetic_root):
    out = run_cached("voc07_svm.py", r18_weights, tmp_path, "--costs", "0.01", "1", "--jobs", "1")
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["feature_layer"] == "res5" and results["feature_dim"] == 512
    assert results["split_sizes"] == {"trainval": 40, "test": 40}
    assert len(results["per_class_AP"]) == 20 and set(results["chosen_cost"].values()) <= {0.01, 1.0}
    mean = sum(results["per_class_AP"].values()) / 20
    assert results["metrics"]["voc07_svm_mAP"] == pytest.approx(mean)
    assert len(results["weights"]["sha256"]) == 64
    assert results["data"]["root"] == str(synthetic_root / "VOC2007") and results["data"]["files"] == 84


@pytest.mark.slow  # a subprocess that imports torch: ~10-40 s on a busy 2-core machine
def test_voc07_linear_reports_both_metrics(r18_weights, tmp_path, synthetic_root):
    out = run_cached("voc07_linear.py", r18_weights, tmp_path, "--epochs", "5")
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    metrics = results["metrics"]
    assert 'reduction="sum"' in results["protocol"]
    assert set(metrics) == {"voc07_mAP", "voc07_per_image_AP"}
    assert all(0 < value <= 100 for value in metrics.values())
    assert "CLSA Table 3" in out.stdout


@pytest.mark.slow  # a subprocess that imports torch: ~10-40 s on a busy 2-core machine
def test_wrong_checkpoint_and_missing_voc_are_one_line_errors(r18_weights, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text('{"not": "a checkpoint"}')
    out = run("voc07_svm.py", "--weights", bad, "--output-dir", tmp_path)
    assert out.returncode == 2 and "bad.pth" in out.stderr and out.stderr.strip().count("\n") == 0
    out = run("voc07_linear.py", "--weights", r18_weights, "--data-root", tmp_path / "VOC2007")
    assert out.returncode == 2 and "expected the layout" in out.stderr
