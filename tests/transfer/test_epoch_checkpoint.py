import pytest
import torch

from common.errors import RecordMismatchError
from transfer.epoch_checkpoint import EpochCheckpoint


@pytest.mark.parametrize(
    "sha, preset, epochs, differing",
    [
        ("abc", "moco", 100, "--preset 'clsa' -> 'moco'"),
        ("abc", "clsa", 90, "--epochs 100 -> 90"),
        ("xyz", "clsa", 100, "--weights (sha256) 'abc' -> 'xyz'"),
    ],
)
def test_resume_loads_the_saved_state_and_refuses_other_weights_or_flags(tmp_path, sha, preset, epochs, differing):
    path = tmp_path / "checkpoint.pth"
    fc = torch.nn.Linear(2, 1)
    EpochCheckpoint(tmp_path, "abc", preset="clsa", epochs=100).save({"fc": fc}, epoch=7)
    other = torch.nn.Linear(2, 1)
    assert EpochCheckpoint(tmp_path, "abc", preset="clsa", epochs=100).resume(fc=other)["epoch"] == 7
    assert torch.equal(other.weight, fc.weight) and torch.equal(other.bias, fc.bias)
    with pytest.raises(RecordMismatchError) as error:
        EpochCheckpoint(tmp_path, sha, preset=preset, epochs=epochs).resume(fc=other)
    assert str(error.value) == (
        f"{path}: written by another run ({differing}); rerun with those or use another --output-dir"
    )


def test_no_checkpoint_is_a_fresh_start(tmp_path):
    assert EpochCheckpoint(tmp_path, "abc", epochs=1).resume(fc=torch.nn.Linear(2, 1)) is None
