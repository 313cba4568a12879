import json

import pytest
from detectron2.config import get_cfg

import detection  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from common.errors import RecordMismatchError
from common.io import sha256_file
from detection.results import aggregate_trials, build_results, trial_is_done


def _trial(path, seed, ap50, sha="abc", config="/c.yaml", config_sha256=None):
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "task": "detection",
                "datasets": {},
                "data_root": "/d",
                "config": config,
                "config_sha256": config_sha256,
                "weights": {"path": "/w.pkl", "sha256": sha},
                "iterations": 10,
                "notes": {},
                "seed": seed,
                "metrics": {"bbox": {"AP50": ap50, "AP": ap50 / 2}},
            }
        )
    )
    return path


def _trial_cfg(weights, seed=0, output_dir="out", **overrides):
    cfg = get_cfg()
    cfg.MODEL.WEIGHTS, cfg.SEED, cfg.OUTPUT_DIR = str(weights), seed, output_dir
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def _written_trial(path, cfg, config_file):
    """results.json as train_net writes it for `cfg` (build_results), with made-up metrics."""
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(build_results(cfg, config_file, {"bbox": {"AP50": 80.0}}, 10)))
    return path


def test_seed_mean_and_population_std(tmp_path):
    paths = [_trial(tmp_path / f"seed_{s}" / "results.json", s, ap) for s, ap in ((0, 80.0), (1, 83.0), (2, 83.0))]
    summary = aggregate_trials(paths)
    assert summary["metrics"]["bbox"]["AP50"] == pytest.approx(82.0)
    assert summary["metrics_std"]["bbox"]["AP50"] == pytest.approx(2**0.5)  # sqrt(((-2)^2 + 1 + 1) / 3)
    assert summary["seeds"] == [0, 1, 2]


def test_an_old_trial_of_other_weights_is_never_averaged_in(tmp_path):
    cfg = _trial_cfg(tmp_path / "w.pkl")
    (tmp_path / "w.pkl").write_bytes(b"new weights")
    old = _trial(
        tmp_path / "seed_0" / "results.json", 0, 80.0, sha="sha-of-old-weights", config=str(tmp_path / "c.yaml")
    )
    with pytest.raises(RecordMismatchError, match="weights"):
        trial_is_done(old, cfg, str(tmp_path / "c.yaml"))
    assert not trial_is_done(tmp_path / "seed_1" / "results.json", cfg, str(tmp_path / "c.yaml"))
    same = _written_trial(
        tmp_path / "seed_2" / "results.json",
        _trial_cfg(tmp_path / "w.pkl", seed=2, output_dir="o2"),
        str(tmp_path / "c.yaml"),
    )
    assert json.loads(same.read_text())["weights"]["sha256"] == sha256_file(tmp_path / "w.pkl")
    assert trial_is_done(same, cfg, str(tmp_path / "c.yaml"))  # another seed and folder: the same run


def test_a_trial_with_other_overrides_is_never_averaged_in(tmp_path):
    """A smoke-schedule trial left in OUTPUT_DIR must not join a full run of the same config and weights."""
    (tmp_path / "w.pkl").write_bytes(b"weights")
    smoke = _written_trial(
        tmp_path / "seed_0" / "results.json",
        _trial_cfg(tmp_path / "w.pkl", **{"SOLVER.MAX_ITER": "20"}),
        str(tmp_path / "c.yaml"),
    )
    with pytest.raises(RecordMismatchError, match="config_sha256"):
        trial_is_done(smoke, _trial_cfg(tmp_path / "w.pkl"), str(tmp_path / "c.yaml"))


def test_a_trial_on_other_data_is_never_averaged_in(tmp_path, monkeypatch):
    """results.json records the data root and a fingerprint of its split files; another root is another run."""
    (tmp_path / "w.pkl").write_bytes(b"weights")
    for root in ("a", "b"):
        (tmp_path / root / "VOC2007" / "ImageSets" / "Main").mkdir(parents=True)
        (tmp_path / root / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "a"))
    trial = _written_trial(
        tmp_path / "seed_0" / "results.json", _trial_cfg(tmp_path / "w.pkl"), str(tmp_path / "c.yaml")
    )
    data = json.loads(trial.read_text())["data"]
    assert data["root"] == str(tmp_path / "a") and data["files"] == 1
    assert trial_is_done(trial, _trial_cfg(tmp_path / "w.pkl"), str(tmp_path / "c.yaml"))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "b"))
    with pytest.raises(RecordMismatchError, match="data"):
        trial_is_done(trial, _trial_cfg(tmp_path / "w.pkl"), str(tmp_path / "c.yaml"))
