"""tools/train_net.py end to end on the synthetic VOC and COCO sets, on the CPU."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torchvision
import yaml

from tools.run_suite import SMOKE_ARGS

TRAIN_NET = [sys.executable, "tools/train_net.py"]


def run(args, datasets, **kwargs):
    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets)}
    return subprocess.run(TRAIN_NET + args, env=env, capture_output=True, text=True, **kwargs)


def _finite(results, task, *metrics):
    return all(math.isfinite(results["metrics"][task][m]) for m in metrics)


@pytest.fixture(scope="module")
def demo_suite(demo_run):
    """The demo's suite folder: its voc_det and coco_det stages ran tools/train_net.py at the smoke sizes
    (tools/run_suite.py's SMOKE_ARGS) on the demo's pretrained ResNet-50, converted by its convert stage."""
    return demo_run[0] / "suite" / "clsa_single_demo"


@pytest.mark.slow
def test_voc_faster_rcnn_trains_and_writes_results(demo_suite):
    results = json.loads((demo_suite / "voc_det" / "results.json").read_text())
    assert _finite(results, "bbox", "AP", "AP50", "AP75")
    assert _finite(results, "bbox_coco_style", "APs", "APm", "APl")
    run_config = yaml.safe_load((demo_suite / "voc_det" / "config.yaml").read_text())
    assert results["iterations"] == 20 and results["seed"] == run_config["SEED"] >= 0
    from common.io import sha256_file

    assert results["weights"]["sha256"] == sha256_file(demo_suite / "convert" / "model_d2.pkl")


@pytest.mark.slow
def test_coco_mask_rcnn_trains_and_reports_box_and_mask_ap(demo_suite):
    results = json.loads((demo_suite / "coco_det" / "results.json").read_text())
    assert _finite(results, "bbox", "AP", "AP50", "AP75", "APs", "APm", "APl")
    assert _finite(results, "segm", "AP", "APs")


def assert_one_line_error_and_nothing_written(proc, output_dir, *fragments):
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(f in last for f in fragments), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Starting training" not in proc.stderr + proc.stdout
    assert not output_dir.exists(), "nothing (config.yaml, log.txt) is written for a user's mistake"


def test_missing_data_set_fails_before_the_model_is_built_naming_the_folder(tmp_path):
    proc = run(["--config", "detection/voc0712_R50_C4.yaml", "OUTPUT_DIR", str(tmp_path / "o")], tmp_path / "nodata")
    assert_one_line_error_and_nothing_written(
        proc, tmp_path / "o", f"expects {tmp_path / 'nodata' / 'VOC2007'}, which does not exist"
    )


def test_unconverted_weights_stop_before_the_model_is_built(synthetic_root, tmp_path):
    bad = tmp_path / "model_final.pth"
    torch.save({"kind": "clsa-suite/pretrain", "model": torchvision.models.resnet18().state_dict()}, bad)
    proc = run(
        [
            "--config",
            "detection/voc0712_R50_C4.yaml",
            "MODEL.WEIGHTS",
            str(bad),
            "OUTPUT_DIR",
            str(tmp_path / "o"),
            *SMOKE_ARGS["voc_det"],
        ],
        synthetic_root,
    )
    assert_one_line_error_and_nothing_written(proc, tmp_path / "o", "unconverted weights", "converters/to_d2.py")


def test_a_malformed_voc_annotation_is_named_before_the_model_is_built(synthetic_root, tmp_path):
    import shutil

    for year in ("VOC2007", "VOC2012"):
        shutil.copytree(synthetic_root / year, tmp_path / "data" / year)
    annotation = sorted((tmp_path / "data" / "VOC2012" / "Annotations").glob("*.xml"))[0]
    annotation.write_text(annotation.read_text()[:120])
    proc = run(["--config", "detection/voc0712_R50_C4.yaml", "OUTPUT_DIR", str(tmp_path / "o")], tmp_path / "data")
    assert_one_line_error_and_nothing_written(
        proc, tmp_path / "o", f"{annotation}: unreadable VOC annotation", "ParseError"
    )


# A ResNet-50 a quarter as wide: it learns the synthetic shapes from scratch in a CPU-minute or two.
NARROW_R50 = [
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "16",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "32",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "64",
]


@pytest.mark.slow
def test_a_trained_model_beats_an_untrained_one_and_eval_only_reproduces_it(synthetic_root, tmp_path):
    """The metric is wired to the predictions: training on the easy synthetic set raises AP from ~0,
    and --eval-only of the trained weights gives the same numbers as the end of training."""
    common = [*SMOKE_ARGS["coco_det"], *NARROW_R50, "MODEL.WEIGHTS", ""]
    schedule = [
        "SOLVER.IMS_PER_BATCH",
        "4",
        "SOLVER.BASE_LR",
        "0.02",
        "SOLVER.MAX_ITER",
        "150",
        "SOLVER.STEPS",
        "(130,)",
        "SOLVER.WARMUP_ITERS",
        "20",
        "SEED",
        "0",
    ]
    trained = run(
        ["--config", "detection/coco_R50_C4.yaml", "OUTPUT_DIR", str(tmp_path / "trained"), *common, *schedule],
        synthetic_root,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    untrained = run(
        [
            "--config",
            "detection/coco_R50_C4.yaml",
            "--eval-only",
            "OUTPUT_DIR",
            str(tmp_path / "untrained"),
            *common,
            "SEED",
            "0",
        ],
        synthetic_root,
    )
    assert untrained.returncode == 0, untrained.stderr[-3000:]
    assert "RANDOM INIT" in untrained.stdout + untrained.stderr
    reproduced = run(
        [
            "--config",
            "detection/coco_R50_C4.yaml",
            "--eval-only",
            "OUTPUT_DIR",
            str(tmp_path / "reproduced"),
            *common,
            "MODEL.WEIGHTS",
            str(tmp_path / "trained" / "model_final.pth"),
        ],
        synthetic_root,
    )
    assert reproduced.returncode == 0, reproduced.stderr[-3000:]
    metrics = {
        name: json.loads((tmp_path / name / "results.json").read_text())["metrics"]
        for name in ("trained", "untrained", "reproduced")
    }
    ap50 = {name: m["bbox"]["AP50"] for name, m in metrics.items()}
    assert ap50["trained"] > 5.0 and ap50["trained"] > ap50["untrained"] + 5.0, ap50
    for task in ("bbox", "segm"):
        assert metrics["reproduced"][task] == pytest.approx(metrics["trained"][task], abs=1e-6)


def test_missing_weights_file_stops_before_training_naming_the_converter(synthetic_root, tmp_path):
    proc = run(
        [
            "--config",
            "detection/voc0712_R50_C4.yaml",
            "MODEL.WEIGHTS",
            str(tmp_path / "r50.pkl"),
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ],
        synthetic_root,
    )
    assert_one_line_error_and_nothing_written(
        proc, tmp_path / "out", f"MODEL.WEIGHTS {tmp_path / 'r50.pkl'} does not exist", "converters/to_d2.py"
    )


def test_a_random_seed_is_drawn_once_for_all_processes():
    from tools.train_net import parse_args, with_one_seed

    fixed = with_one_seed(parse_args(["--config", "detection/voc0712_R50_C4.yaml", "SEED", "-1"]))
    assert fixed.opts[:2] == ["SEED", "-1"] and fixed.opts[2] == "SEED" and int(fixed.opts[3]) >= 0
    kept = with_one_seed(parse_args(["--config", "detection/voc0712_R50_C4.yaml", "SEED", "7"]))
    assert kept.opts == ["SEED", "7"]
