import json
import math
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_end_to_end_fills_every_table3_cell(tmp_path):
    """`make demo` at the tiny size: pretraining, conversion, every transfer stage and the report."""
    proc = subprocess.run(
        [sys.executable, "tools/demo.py", "--out", str(tmp_path), "--size", "tiny"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "suite" / "clsa_single_demo" / "report.json").read_text())
    row = report["ours"]["clsa_single_demo"]
    assert row["synthetic_data"] is True
    for column in report["columns"]:
        assert math.isfinite(row["table3"][column].get("mean", math.nan)), (column, row["table3"][column])
    assert "SMOKE-SCALE" in proc.stdout
    knn_line = re.search(r"kNN top-1 \(k=20\) on the synthetic ImageNet val split: random init \d+\.\d%.*", proc.stdout)
    assert knn_line
    assert row["table3"]["VOC07 Accuracy"]["protocol"] == "reference protocol"

    again = subprocess.run(
        [sys.executable, "tools/demo.py", "--out", str(tmp_path), "--size", "tiny"], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "model_final.pth exists, skipped" in again.stdout
    assert knn_line.group(0) in again.stdout  # read again from the finished run's metrics.json
    for stage in ("convert", "voc07_svm", "voc07_linear", "voc07_clsa", "voc_det", "coco_det"):
        assert f"{stage}: already done for this checkpoint and data, skipped" in again.stdout
