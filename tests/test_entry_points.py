"""Every entry point answers a user's mistake with one line on stderr, `error: ...`, and exit code 2.

Each case is a command as a user would type it with one thing wrong: a missing file or folder, an
unknown config key, an option after the config overrides, a bad flag value. None may end in a
traceback or write anything.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MISSING = "/nonexistent/clsa-suite/missing.pth"

CASES = {
    "pretrain: option after the overrides": (
        [
            "pretrain/main.py",
            "--config-file",
            "pretrain/configs/clsa_single.yaml",
            "DATA.ROOT",
            "d",
            "--resume",
            "auto",
        ],
        "--resume comes after the KEY VALUE overrides",
    ),
    "pretrain: unknown config key": (["pretrain/main.py", "MODEL.QUEUE_SIZ", "4096"], "MODEL.QUEUE_SIZ"),
    "pretrain: missing config file": (["pretrain/main.py", "--config-file", "nope.yaml"], "nope.yaml: no such file"),
    "pretrain: missing data root": (["pretrain/main.py", "DATA.ROOT", "/nonexistent/train"], "/nonexistent/train"),
    "pretrain: bad flag value": (["pretrain/main.py", "--num-gpus", "0"], "--num-gpus"),
    "to_d2: missing checkpoint": (["converters/to_d2.py", MISSING], f"{MISSING}: no such file"),
    "to_torchvision: missing checkpoint": (["converters/to_torchvision.py", MISSING], f"{MISSING}: no such file"),
    "voc07_svm: missing weights": (["transfer/voc07_svm.py", "--weights", MISSING], f"{MISSING}: no such file"),
    "voc07_linear: missing weights": (["transfer/voc07_linear.py", "--weights", MISSING], f"{MISSING}: no such file"),
    "imagenet_linear: missing weights": (
        ["transfer/imagenet_linear.py", "--weights", MISSING, "--data", "/nonexistent"],
        f"{MISSING}: no such file",
    ),
    "knn: missing weights": (
        ["transfer/knn.py", "--weights", MISSING, "--data", "/nonexistent"],
        f"{MISSING}: no such file",
    ),
    "train_net: unknown config key": (
        ["tools/train_net.py", "--config-file", "detection/voc0712_R50_C4.yaml", "MODEL.NOPE", "1"],
        "MODEL.NOPE",
    ),
    "train_net: option after the overrides": (
        ["tools/train_net.py", "--config-file", "detection/voc0712_R50_C4.yaml", "SEED", "1", "--eval-only", "x"],
        "--eval-only comes after the KEY VALUE overrides",
    ),
    "run_suite: missing weights": (
        ["tools/run_suite.py", "--weights", MISSING, "--out", "/tmp/clsa-suite-never-written"],
        f"{MISSING}: no such file",
    ),
    "report: not a suite folder": (["tools/report.py", "/nonexistent/suite"], "/nonexistent/suite is not a folder"),
    "make_synthetic_data: unknown size": (
        ["tools/make_synthetic_data.py", "--out", "/tmp/clsa-never-written", "--size", "huge"],
        "--size",
    ),
    "demo: unknown size": (["tools/demo.py", "--size", "huge"], "--size"),
    "learning_check: bad seed": (["tools/learning_check.py", "--seed", "x"], "--seed"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_users_mistake_is_one_line_and_exit_code_2(name, tmp_path):
    argv, named = CASES[name]
    proc = subprocess.run(
        [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=300
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # Libraries may log before the mistake is found; the error itself is the last line, and one line.
    assert lines and lines[-1].startswith("error: ") and named in lines[-1], proc.stderr
    assert not Path("/tmp/clsa-suite-never-written").exists() and not Path("/tmp/clsa-never-written").exists()


def _env(tmp_path):
    return {**os.environ, "PYTHONPATH": str(REPO), "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
