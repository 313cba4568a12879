"""`pretrain/schedule.py`: the learning rate of each iteration and the iterations that end with a checkpoint."""

import pytest
from yacs.config import CfgNode

from pretrain.config import load_config
from pretrain.schedule import CheckpointSchedule, learning_rate


def test_learning_rate_scales_with_batch_warms_up_and_decays_to_zero():
    cfg = load_config(
        "",
        ["SOLVER.BATCH_SIZE", "512", "SOLVER.EPOCHS", "10", "SOLVER.WARMUP_EPOCHS", "1", "MODEL.QUEUE_SIZE", "1024"],
        world_size=1,
    )
    assert learning_rate(cfg, 9, iters_per_epoch=10) == pytest.approx(0.06)  # end of warmup: 0.03 * 512/256
    assert learning_rate(cfg, 4, iters_per_epoch=10) == pytest.approx(0.03)
    assert learning_rate(cfg, 10, iters_per_epoch=10) == pytest.approx(0.06)
    assert learning_rate(cfg, 55, iters_per_epoch=10) == pytest.approx(0.03)  # half-way through the cosine
    assert learning_rate(cfg, 99, iters_per_epoch=10) < 1e-3


def test_checkpoints_end_every_second_epoch_every_third_iteration_a_stop_and_the_run():
    """4 iterations per epoch, 12 in all: epochs end after iterations 3, 7 and 11 (0-based)."""
    schedule = CheckpointSchedule(CfgNode({"CHECKPOINT_PERIOD": 2, "CHECKPOINT_PERIOD_ITERS": 3}), 4, 12)
    names = [schedule.name(iteration, stopping=False) for iteration in range(12)]
    saved = {i: name for i, name in enumerate(names) if name}
    assert saved == {2: "model_0000002", 5: "model_0000005", 7: "model_0000007", 8: "model_0000008", 11: "model_final"}
    assert schedule.name(0, stopping=True) == "model_0000000"
    assert (
        CheckpointSchedule(CfgNode({"CHECKPOINT_PERIOD": 1, "CHECKPOINT_PERIOD_ITERS": 0}), 4, 12).name(
            2, stopping=False
        )
        is None
    )
