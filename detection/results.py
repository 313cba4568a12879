"""results.json of a detection run, and the mean/std over seeds (the VOC protocol averages 5 trials)."""

import hashlib
import json
import os

import numpy as np

from common.datasets import DETECTRON2_SPLITS, detectron2_datasets_root
from common.io import fingerprint_files, sha256_file
from common.records import check_record
from detection.evaluation import flat_metrics


def trial_settings(cfg, config_file):
    """What two trials must share to be averaged: the config file, the weights' content, the data
    (root and split files), and the merged config (overrides included) apart from the seed and output
    folder, which differ per trial."""
    weights = cfg.MODEL.WEIGHTS
    shared = cfg.clone()
    shared.defrost()
    shared.SEED, shared.OUTPUT_DIR = 0, ""
    return {
        "config": os.path.abspath(config_file),
        "weights": sha256_file(weights) if weights and os.path.isfile(weights) else None,
        "config_sha256": hashlib.sha256(shared.dump().encode()).hexdigest(),
        "data": fingerprint_files(detectron2_datasets_root(), DETECTRON2_SPLITS),
    }


def build_results(cfg, config_file, results, iterations):
    weights = cfg.MODEL.WEIGHTS
    settings = trial_settings(cfg, config_file)
    return {
        "task": "detection",
        "datasets": {"train": list(cfg.DATASETS.TRAIN), "test": list(cfg.DATASETS.TEST)},
        "metrics": flat_metrics(results),
        "config": settings["config"],
        "config_sha256": settings["config_sha256"],
        "weights": {"path": os.path.abspath(weights) if weights else "", "sha256": settings["weights"]},
        "data_root": str(detectron2_datasets_root()),
        "data": settings["data"],
        "seed": cfg.SEED,
        "iterations": iterations,
        "notes": {
            "bbox": "VOC: PascalVOCDetectionEvaluator (VOC07 11-point AP for voc_2007_test); COCO: COCOeval",
            "bbox_coco_style": "VOC only: COCOeval on the same predictions, for APs/APm/APl",
        },
    }


def aggregate_trials(paths):
    """Mean and std (population, as MoCo reports) of every metric over the trials' results.json."""
    trials = [json.loads(open(p).read()) for p in paths]
    keys = {(task, m) for t in trials for task, ms in t["metrics"].items() for m in ms}
    mean, std = {}, {}
    for task, metric in sorted(keys):
        values = np.array([t["metrics"][task][metric] for t in trials])
        mean.setdefault(task, {})[metric] = float(values.mean())
        std.setdefault(task, {})[metric] = float(values.std())
    first = trials[0]
    return {
        **{k: first[k] for k in ("task", "datasets", "data_root", "config", "weights", "iterations", "notes")},
        "data": first.get("data"),
        "metrics": mean,
        "metrics_std": std,
        "seeds": [t["seed"] for t in trials],
        "trials": [os.path.abspath(p) for p in paths],
    }


def trial_is_done(path, cfg, config_file):
    """True if `path` holds a finished trial of this config, overrides and weights; RecordMismatchError
    if it holds a trial of other weights or settings, which is neither averaged in nor overwritten."""
    if not os.path.isfile(path):
        return False
    found = json.loads(open(path).read())
    saved = {**found, "weights": found.get("weights", {}).get("sha256")}
    check_record(path, saved, trial_settings(cfg, config_file), "use another OUTPUT_DIR or move it away")
    return True
