import json

import pytest

from detection.results import aggregate_trials, trial_is_done


class _Cfg:
    class MODEL:
        WEIGHTS = ""


def _trial(path, seed, ap50, sha="abc", config="/c.yaml"):
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "task": "detection", "datasets": {}, "data_root": "/d", "config": config,
        "weights": {"path": "/w.pkl", "sha256": sha}, "iterations": 10, "notes": {}, "seed": seed,
        "metrics": {"bbox": {"AP50": ap50, "AP": ap50 / 2}}}))
    return path


def test_seed_mean_and_population_std(tmp_path):
    paths = [_trial(tmp_path / f"seed_{s}" / "results.json", s, ap) for s, ap in ((0, 80.0), (1, 83.0), (2, 83.0))]
    summary = aggregate_trials(paths)
    assert summary["metrics"]["bbox"]["AP50"] == pytest.approx(82.0)
    assert summary["metrics_std"]["bbox"]["AP50"] == pytest.approx(2 ** 0.5)  # sqrt(((-2)^2 + 1 + 1) / 3)
    assert summary["seeds"] == [0, 1, 2]


def test_an_old_trial_of_other_weights_is_never_averaged_in(tmp_path):
    cfg = _Cfg()
    cfg.MODEL.WEIGHTS = str(tmp_path / "w.pkl")
    (tmp_path / "w.pkl").write_bytes(b"new weights")
    old = _trial(tmp_path / "seed_0" / "results.json", 0, 80.0, sha="sha-of-old-weights",
                 config=str(tmp_path / "c.yaml"))
    with pytest.raises(SystemExit, match="holds a trial of"):
        trial_is_done(old, cfg, str(tmp_path / "c.yaml"))
    assert not trial_is_done(tmp_path / "seed_1" / "results.json", cfg, str(tmp_path / "c.yaml"))
    from common.io import sha256_file

    same = _trial(tmp_path / "seed_2" / "results.json", 2, 80.0, sha=sha256_file(cfg.MODEL.WEIGHTS),
                  config=str(tmp_path / "c.yaml"))
    assert trial_is_done(same, cfg, str(tmp_path / "c.yaml"))
