"""Shared fixtures. The synthetic data sets are generated once per test session.

detectron2 reads DETECTRON2_DATASETS when its builtin data sets are first imported, so the variable
is set here, before any test module imports detectron2.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

_DATASETS = Path(tempfile.mkdtemp(prefix="clsa-tests-datasets-"))
os.environ["DETECTRON2_DATASETS"] = str(_DATASETS)
atexit.register(shutil.rmtree, _DATASETS, ignore_errors=True)

if "PYTEST_XDIST_WORKER" in os.environ:
    # `make test` runs one pytest-xdist worker per core: each worker, and the processes its tests
    # start, compute on one thread, so that two workers do not fight over both cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_root():
    """The tiny synthetic data sets (imagenet/, VOC2007/, VOC2012/, coco/), seed 0."""
    from common.synthetic import generate

    generate(_DATASETS, seed=0, size="tiny")
    return _DATASETS


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`make demo` at the tiny size, run once per test session: (its output folder, its finished process).
    Its suite trains and evaluates both detectors at the smoke sizes, so the detection smoke tests read
    their results from it rather than train again."""
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "tools/demo.py", "--out", str(out), "--size", "tiny"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


class TinyPretrain:
    """`python pretrain/main.py` at its smallest, for the tests that train: resnet18 on 32 px key/weak
    and 24 px strong crops, global batch 8, queue 16."""

    # 80 synthetic images, global batch 12: 6 iterations per epoch, so 8 iterations cross an epoch.
    RESUME = ("SOLVER.BATCH_SIZE", "12", "MODEL.QUEUE_SIZE", "24")

    @staticmethod
    def args(root, output_dir, *extra):
        return [
            "--config-file",
            str(REPO / "pretrain/configs/clsa_single.yaml"),
            "DATA.ROOT",
            str(root),
            "OUTPUT_DIR",
            str(output_dir),
            "MODEL.ARCH",
            "resnet18",
            "MODEL.DIM",
            "16",
            "MODEL.MLP_HIDDEN",
            "32",
            "MODEL.QUEUE_SIZE",
            "16",
            "SOLVER.BATCH_SIZE",
            "8",
            "DATA.NUM_WORKERS",
            "0",
            "DATA.KEY_VIEW",
            "[32, 0.2, 1.0]",
            "DATA.WEAK_VIEWS",
            "[[32, 0.2, 1.0]]",
            "DATA.STRONG_VIEWS",
            "[[24, 0.086, 0.429]]",
            "LOG_PERIOD",
            "2",
            *extra,
        ]

    @staticmethod
    def final_state(output_dir):
        return torch.load(Path(output_dir) / "model_final.pth", weights_only=True)

    @staticmethod
    def assert_bitwise_equal(straight, resumed):
        """Two 8-iteration runs (iterations 0..7) ended with the same weights, buffers and momenta."""
        assert straight["iteration"] == resumed["iteration"] == 7
        assert straight["model"].keys() == resumed["model"].keys()
        for key, value in straight["model"].items():
            assert torch.equal(value, resumed["model"][key]), key
        for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
            assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


@pytest.fixture(scope="session")
def tiny_pretrain():
    """The tiny pretraining command line and the checks on its outputs (`TinyPretrain`)."""
    return TinyPretrain


@pytest.fixture(scope="session")
def tiny_pretrained(synthetic_root, tiny_pretrain, tmp_path_factory):
    """The output folder of one finished tiny pretraining run (4 iterations, a checkpoint every 2), made
    once per test session for the tests that read a run's files or resume from its checkpoint."""
    from pretrain.main import main, parse_args

    output_dir = tmp_path_factory.mktemp("tiny_pretrained")
    schedule = ("SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD_ITERS", "2")
    main(parse_args(tiny_pretrain.args(synthetic_root / "imagenet" / "train", output_dir, *schedule)))
    return output_dir


@pytest.fixture
def other_checkout(tmp_path):
    """A copy of the repository's tracked files elsewhere: another checkout of the same commit."""
    checkout = tmp_path / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in filter(None, tracked.stdout.split("\0")):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    return checkout


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), the tests that read the session's demo run
    share one worker, so that it is made once."""
    for item in items:
        if "demo_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("demo_run"))
