"""`pretrain/divergence.py` in a run: a diverged state is never saved, and the message says how to go on."""

import pytest
import torch

from pretrain.divergence import DivergenceError
from pretrain.main import main, parse_args


def test_non_finite_loss_stops_naming_the_iteration_and_saves_nothing(train_root, tiny_pretrain, tmp_path):
    """A temperature of 1e-40 (a float32 subnormal) lies in its range, yet sends the logits to infinity."""
    with pytest.raises(DivergenceError, match="iteration 0.*no checkpoint was saved .*start again"):
        main(parse_args(tiny_pretrain.args(train_root, tmp_path, "SOLVER.MAX_ITER", "2", "MODEL.TEMPERATURE", "1e-40")))
    assert not list(tmp_path.glob("*.pth"))


def test_divergence_saves_nothing_names_the_last_good_checkpoint_and_a_lower_lr_resumes_from_it(
    train_root, tiny_pretrain, tmp_path
):
    """lr 1e30 leaves finite weights of ~1e28 after a step whose loss was finite; the next step
    overflows. Such a state is not saved, and resuming as the message advises trains on."""

    def run(max_iter, *extra):
        every_step = ("SOLVER.MAX_ITER", str(max_iter), "SOLVER.CHECKPOINT_PERIOD_ITERS", "1", *extra)
        main(parse_args(["--resume", "auto", *tiny_pretrain.args(train_root, tmp_path, *every_step)]))

    run(2)
    good = tmp_path / "model_final.pth"
    with pytest.raises(DivergenceError) as error:
        run(4, "SOLVER.BASE_LR", "1e30")
    assert f"the last good checkpoint is {good}: lower SOLVER.BASE_LR" in str(error.value)
    assert "--resume auto" in str(error.value) and "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000000.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    run(4)
    resumed = tiny_pretrain.final_state(tmp_path)
    assert resumed["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in resumed["model"].values() if v.is_floating_point())
