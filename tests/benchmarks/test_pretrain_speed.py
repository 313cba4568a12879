"""benchmarks/pretrain_speed.py runs every row it prints on a GPU, here on the CPU at toy sizes."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_prints_step_and_both_data_paths_end_to_end():
    result = subprocess.run(
        [sys.executable, "benchmarks/pretrain_speed.py", "--no-augment-only", "--arch", "resnet18",
         "--batch-size", "4", "--queue-size", "16", "--steps", "1", "--warmup", "1", "--workers", "1",
         "--presets", "clsa_single"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "JPEGs 500x375 of 9" in result.stdout  # about 95 KiB each
    for path in ("step fp32", "step bf16", "workers", "batched"):
        assert re.search(rf"^clsa_single +{path} +\d+\.\d", result.stdout, re.MULTILINE), (path, result.stdout)
