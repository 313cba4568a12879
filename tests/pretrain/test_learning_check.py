"""The learning check: how it reads metrics.json, and the check itself (skipped by `make test`)."""

import json

import pytest

from pretrain.learning_check import MARGIN, knn_before_and_after, run


def test_reads_the_initial_and_the_last_knn_from_metrics_json(tmp_path):
    path = tmp_path / "metrics.json"
    rows = [
        {"iteration": -1, "knn/top1_k20": 30.0},
        {"iteration": 19, "loss": 5.0},
        {"iteration": 99, "knn/top1_k20": 41.0},
        {"iteration": 199, "knn/top1_k20": 52.5},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert knn_before_and_after(path) == (30.0, 52.5)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[1:]))
    with pytest.raises(ValueError, match="no knn/top1_k20 of the initial backbone"):
        knn_before_and_after(path)


@pytest.mark.slow
@pytest.mark.learning_check
def test_pretraining_lifts_knn_clearly_above_random_init(tmp_path):
    result = run(tmp_path)
    assert result["passed"] and result["margin"] >= MARGIN, result
