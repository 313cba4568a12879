"""The pretraining benchmarks run every row they print, here on the CPU at toy sizes."""

import os
import re
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


@pytest.mark.slow
def test_benchmark_prints_step_and_both_data_paths_end_to_end():
    result = run_benchmark(
        "benchmarks/pretrain_speed.py",
        "--no-augment-only",
        "--arch",
        "resnet18",
        "--batch-size",
        "4",
        "--queue-size",
        "16",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--workers",
        "1",
        "--presets",
        "clsa_single",
        timeout=600,
    )
    assert "JPEGs 500x375 of 9" in result.stdout  # about 95 KiB each
    for path in ("step fp32", "step bf16", "workers", "batched"):
        assert re.search(rf"^clsa_single +{path} +\d+\.\d", result.stdout, re.MULTILINE), (path, result.stdout)


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


def test_per_core_benchmark_prints_every_pipeline_and_its_ratio():
    result = run_benchmark("benchmarks/pretrain_data_speed.py", "--images", "2", "--rounds", "1")
    for name, views in [
        ("clsa_single", 3),
        ("clsa_multi", 11),
        ("mocov2", 2),
        (r"reference CLSA-Single \(5 views\)", 5),
        (r"reference CLSA-Multi \(11 views\)", 11),
        ("MoCo v2's PIL pipeline", 2),
    ]:
        assert re.search(rf"^{name} +{views} +\d+\.\d+ +\d+\.\d", result.stdout, re.MULTILINE), (name, result.stdout)
    assert (
        len(re.findall(r"^\w+ vs .*: \d+\.\d\dx \(target \d\.\dx: (met|NOT met)\)$", result.stdout, re.MULTILINE)) == 3
    )


@pytest.mark.slow
def test_gpu_script_runs_its_rows_at_toy_sizes(tmp_path):
    result = subprocess.run(
        ["bash", "benchmarks/gpu_views.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "multi_checkpoint.txt",
        "per_core.txt",
        "single.txt",
        "single_32.txt",
        "single_32_trace.json",
        "two_process.txt",
        "two_process_syncbn.txt",
    ]
    two = (tmp_path / "two_process.txt").read_text()
    assert re.search(r"^ +2 +16 +[\d.]+ +[\d.]+ +\d+%$", two, re.MULTILINE), two
    assert "skipped: SyncBatchNorm needs GPUs" in (tmp_path / "two_process_syncbn.txt").read_text()
    assert re.search(
        r"^clsa_single batched, ms per iteration: ipc [\d.]+, decode [\d.]+, views [\d.]+, step [\d.]+; trace ",
        (tmp_path / "single_32.txt").read_text(),
        re.MULTILINE,
    )
    assert '"traceEvents"' in (tmp_path / "single_32_trace.json").read_text()
    assert "checkpoint strong True" in (tmp_path / "multi_checkpoint.txt").read_text()
    for preset in ("clsa_single", "mocov2"):
        assert re.search(rf"^{preset} +batched +\d", (tmp_path / "single.txt").read_text(), re.MULTILINE)


def test_overlap_benchmark_prints_both_rows_and_their_ratio():
    result = run_benchmark(
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
    for row in ("serial", "producer"):
        assert re.search(rf"^{row} +\d+ +\d+$", result.stdout, re.MULTILINE), (row, result.stdout)
    assert re.search(r"^producer / serial: \d+\.\d\dx faster \(ideal \d\.\d\dx\)$", result.stdout, re.MULTILINE)
