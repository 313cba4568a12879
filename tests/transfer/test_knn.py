import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.backbone import load_backbone
from common.imagenet import center_crop_transform, image_folders
from common.trunk import build_trunk
from tests.common.test_knn_vote import brute_force_knn


@pytest.mark.slow
def test_script_one_and_three_processes_match_features_extracted_and_voted_by_hand(
    r18_weights, synthetic_root, tmp_path
):
    root = synthetic_root / "imagenet"
    transform = center_crop_transform(64)
    train_set, val_set = image_folders(root, train_transform=transform, val_transform=transform)
    trunk = build_trunk(load_backbone(r18_weights), "res5")
    with torch.no_grad():
        features = {
            name: (np.stack([trunk(image[None])[0].double().numpy() for image, _ in split]), np.array(split.targets))
            for name, split in (("train", train_set), ("val", val_set))
        }
    (bank, bank_labels), (queries, query_labels) = (
        (f / np.linalg.norm(f, axis=1, keepdims=True), labels) for f, labels in features.values()
    )
    expected = {}
    for k in (10, 20):
        expected[f"top1_k{k}"], expected[f"top5_k{k}"] = brute_force_knn(
            bank, bank_labels, queries, query_labels, k, 0.07
        )
    args = [
        "transfer/knn.py",
        "--weights",
        str(r18_weights),
        "--data",
        str(root),
        "--crop-size",
        "64",
        "--workers",
        "0",
        "--batch-size",
        "16",
        "--ks",
        "10",
        "20",
        "100",
    ]
    one = subprocess.run([sys.executable, *args, "--output-dir", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    three = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "3",
            *args,
            "--output-dir",
            str(tmp_path / "three"),
        ],
        capture_output=True,
        text=True,
    )
    assert three.returncode == 0, three.stderr
    for run, processes in (("one", 1), ("three", 3)):
        results = json.loads((tmp_path / run / "results.json").read_text())
        assert results["metrics"] == pytest.approx(expected, abs=1e-6), run
        assert results["processes"] == processes
        assert "left out, larger than the train set: [100]" in results["protocol"]
        assert results["split_sizes"] == {"train": 80, "val": 40, "classes": 10}


def test_missing_split_is_one_line_and_exit_2(r18_weights, tmp_path):
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    run = subprocess.run(
        [
            sys.executable,
            "transfer/knn.py",
            "--weights",
            str(r18_weights),
            "--data",
            str(tmp_path / "data"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: ") and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
