"""The learning check: how it reads metrics.json, reuses a finished run, and runs both recipes end to end
(two steps here; the check itself is `make learning-check`, its figures in benchmarks.md)."""

import json

import pytest

from common.errors import UserError
from pretrain.learning_check import RECIPES, RESULT, knn_curve, run, run_folder


def test_reads_the_knn_curve_from_the_initial_backbone_to_the_last_evaluation(tmp_path):
    path = tmp_path / "metrics.json"
    rows = [
        {"iteration": -1, "knn/top1_k20": 30.0},
        {"iteration": 19, "loss": 5.0},
        {"iteration": 99, "knn/top1_k20": 41.0},
        {"iteration": 199, "knn/top1_k20": 52.5},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert knn_curve(path) == [[0, 30.0], [100, 41.0], [200, 52.5]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[1:]))
    with pytest.raises(ValueError, match="no knn/top1_k20 of the initial backbone"):
        knn_curve(path)


@pytest.mark.parametrize("method", ["clsa", "mocov2"])
def test_each_recipe_runs_and_its_result_is_kept_then_reused(tmp_path, monkeypatch, method):
    overrides = ("SOLVER.MAX_ITER", "2", "KNN.PERIOD_ITERS", "1", "LOG_PERIOD", "1")
    result = run(tmp_path, method, "coloured", 3, overrides)
    assert [step for step, _ in result["curve"]] == [0, 1, 2]
    assert result["margin"] == result["curve"][2][1] - result["curve"][0][1]
    assert result["passed"] == (result["margin"] >= 10)
    assert (tmp_path / "data" / "seed_3" / "shapes_coloured" / "train" / "star").is_dir()
    log = (run_folder(tmp_path, method, "coloured", 3) / "pretrain" / "log.txt").read_text()
    assert ("loss_ddm" in log) == (method == "clsa")  # CLSA's strong view and DDM loss; MoCo v2 has neither
    assert run(tmp_path, method, "coloured", 3, overrides) == result  # read back, not rerun
    with pytest.raises(UserError, match=f"{RESULT} is a check of another recipe .*, overrides \\['SOLVER.MAX_ITER'"):
        run(tmp_path, method, "coloured", 3)
    # A recipe changed since (here its temperature) is not read back as today's either.
    changed = tmp_path / "changed.yaml"
    changed.write_text(f"_BASE_: {RECIPES[method]}\nMODEL:\n  TEMPERATURE: 0.3\n")
    monkeypatch.setitem(RECIPES, method, changed)
    with pytest.raises(UserError, match=f"{RESULT} is a check of another recipe"):
        run(tmp_path, method, "coloured", 3, overrides)
