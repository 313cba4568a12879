"""The pretraining benchmarks run to the end, here on the CPU at toy sizes."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_benchmark(script, *args, timeout=300):
    """`python script args` from the repository root; fails the test unless it exits 0."""
    result = subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def test_memory_count_nearly_halves_in_bf16_and_checkpointing_drops_the_strong_views():
    result = run_benchmark("benchmarks/pretrain_memory.py", "--arch", "resnet18", "--batch-size", "32")
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in result.stdout.splitlines()[2:]}
    for preset, (fp32, bf16, checkpointed) in rows.items():
        assert fp32 / 2 <= bf16 < 0.6 * fp32, preset  # the losses stay fp32
        if preset == "mocov2":
            assert checkpointed == bf16  # no strong views
        else:
            assert checkpointed < bf16, preset
    # Multi: half its query pixels are in the strong views, whose activations are no longer kept.
    assert rows["clsa_multi"][2] < 0.6 * rows["clsa_multi"][1]


@pytest.mark.slow
def test_gpu_script_runs_its_rows_at_toy_sizes(tmp_path):
    """Its rows run benchmarks/pretrain_speed.py (step only, both data paths, the profiler trace),
    pretrain_processes.py and pretrain_data_speed.py: their smoke run is this one."""
    result = subprocess.run(
        ["bash", "benchmarks/gpu_views.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with gzip.open(tmp_path / "single_32_trace.json.gz", "rt") as trace:
        assert '"traceEvents"' in trace.read()
    # A row that raises is printed as "failed: ..." and the script goes on to the next one.
    for row in tmp_path.glob("*.txt"):
        assert "failed: " not in row.read_text(), (row.name, row.read_text()[-3000:])


def test_overlap_benchmark_runs():
    run_benchmark(
        "benchmarks/prefetch_overlap.py",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--workers",
        "1",
        "--step-ms",
        "20",
    )
