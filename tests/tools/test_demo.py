"""`make demo` end to end at the tiny size (the run is the session's `demo_run`, tests/conftest.py)."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_end_to_end_fills_every_table3_cell_and_a_second_run_redoes_nothing(demo_run):
    """Pretraining, conversion, every transfer stage and the report; run again, each is skipped."""
    out, first = demo_run
    report = json.loads((out / "suite" / "clsa_single_demo" / "report.json").read_text())
    row = report["ours"]["clsa_single_demo"]
    assert row["synthetic_data"] is True
    for column in report["columns"]:
        cell = row["table3"][column]
        assert math.isfinite(cell.get("mean", math.nan)), (column, cell)
        assert cell["mean"] > 0 or cell["iterations"] > 0, (column, cell)  # a 0.0 says why (tools/report.py)
    table3 = (out / "suite" / "clsa_single_demo" / "report.md").read_text().split("### Extended")[0]
    assert not re.search(r"\|\s*0\.0\s*\|", table3), table3
    assert "SMOKE-SCALE" in first.stdout
    # Six iterations cannot show learning; the demo names the check that does, and scores nothing itself.
    assert "`make learning-check` shows that" in first.stdout and "random init" not in first.stdout
    assert row["table3"]["VOC07 Accuracy"]["protocol"] == "reference protocol"
    # The pretraining log a user watches, and the curves the report draws from its metrics.json.
    log = (out / "pretrain" / "log.txt").read_text()
    assert re.search(r"eta: \S+ +epoch: \d+/\d+ +iter: \d+/\d+ .*loss: [\d.]+ .*lr: ", log), log[-2000:]
    assert (out / "suite" / "clsa_single_demo" / "curves.png").stat().st_size > 10_000

    again = subprocess.run(
        [sys.executable, "tools/demo.py", "--out", str(out), "--size", "tiny"], cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "model_final.pth exists, skipped" in again.stdout
    for stage in ("convert", "voc07_svm", "voc07_linear", "voc07_clsa", "voc_det", "coco_det"):
        assert f"{stage}: already done for this checkpoint and data, skipped" in again.stdout


@pytest.mark.slow
def test_the_demo_suite_moved_and_resumed_from_another_checkout_skips_every_stage(demo_run, other_checkout, tmp_path):
    """Stamps name scripts relative to the checkout and outputs relative to the suite folder: a copy of
    the finished suite, resumed by another checkout's run_suite.py, redoes nothing."""
    import os
    import shutil

    out, _ = demo_run
    checkout = other_checkout
    moved = shutil.copytree(out / "suite" / "clsa_single_demo", tmp_path / "elsewhere" / "suite")
    resumed = subprocess.run(
        [sys.executable, str(checkout / "tools/run_suite.py"), "--weights", str(out / "pretrain")]
        + ["--output-dir", str(moved), "--profile", "smoke", "--seeds", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "DETECTRON2_DATASETS": str(out / "datasets")},
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for stage in ("convert", "voc07_svm", "voc07_linear", "voc07_clsa", "voc_det", "coco_det"):
        assert f"{stage}: already done for this checkpoint and data, skipped" in resumed.stdout, stage
