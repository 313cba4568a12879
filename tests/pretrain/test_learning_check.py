"""The learning check: pretraining on the shapes set lifts kNN top-1 clearly above random init."""
import json

import pytest

from pretrain.learning_check import MARGIN, knn_before_and_after, run


def test_reads_the_initial_and_the_last_knn_from_metrics_json(tmp_path):
    path = tmp_path / "metrics.json"
    rows = [{"iteration": -1, "knn/top1_k20": 30.0}, {"iteration": 19, "loss": 5.0},
            {"iteration": 99, "knn/top1_k20": 41.0}, {"iteration": 199, "knn/top1_k20": 52.5}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert knn_before_and_after(path) == (30.0, 52.5)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[1:]))
    with pytest.raises(ValueError, match="no knn/top1_k20 of the initial backbone"):
        knn_before_and_after(path)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="no recipe found yet: every CPU run measured so far ends below its random-init "
                                       "kNN (benchmarks.md, 'The learning check'); strict, so a recipe that passes "
                                       "turns this into a failure to update")
def test_pretraining_lifts_knn_top1_by_the_margin_over_random_init(tmp_path):
    result = run(tmp_path)
    assert result["margin"] >= MARGIN, result
