"""Runs that several pretraining test files compare against (`tiny_pretrain` is in tests/conftest.py)."""

import pytest

from pretrain.main import main, parse_args


@pytest.fixture(scope="session")
def train_root(synthetic_root):
    return synthetic_root / "imagenet" / "train"


@pytest.fixture(scope="session")
def straight_run(train_root, tiny_pretrain, tmp_path_factory):
    """The final state of 8 iterations without interruption (they cross an epoch), for the resume tests."""
    output_dir = tmp_path_factory.mktemp("straight")
    main(parse_args(tiny_pretrain.args(train_root, output_dir, *tiny_pretrain.RESUME, "SOLVER.MAX_ITER", "8")))
    return tiny_pretrain.final_state(output_dir)
