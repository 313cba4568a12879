"""`pretrain/run_state.py`: checkpoints written atomically, read safely, and a damaged one named and skipped."""

import pytest
import torch

from common.errors import CheckpointError
from pretrain.run_state import check_same_run, find_resume_checkpoint, load_checkpoint, save_checkpoint


def tiny_checkpoint(output_dir, iteration):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return save_checkpoint(output_dir, f"model_{iteration:07d}", model, optimizer, iteration, 0, "SEED: 0\n")


def test_truncated_checkpoint_is_named_and_resume_falls_back_to_the_previous_one(tmp_path, caplog):
    older, newer = tiny_checkpoint(tmp_path, 4), tiny_checkpoint(tmp_path, 9)
    newer.write_bytes(newer.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="model_0000009.pth: truncated or corrupt PyTorch checkpoint"):
        load_checkpoint(newer)
    path, checkpoint = find_resume_checkpoint(tmp_path)
    assert path == older and checkpoint["iteration"] == 4
    assert "model_0000009.pth" in caplog.text
    older.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        find_resume_checkpoint(tmp_path)


def test_checkpoint_loads_with_weights_only(tmp_path):
    checkpoint = torch.load(tiny_checkpoint(tmp_path, 0), weights_only=True)
    assert checkpoint["kind"] == "clsa-suite/pretrain" and isinstance(checkpoint["rng"]["torch"], torch.Tensor)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


def test_a_checkpoint_with_non_finite_weights_is_refused_and_resume_falls_back(tmp_path):
    older, newer = tiny_checkpoint(tmp_path, 4), tiny_checkpoint(tmp_path, 9)
    checkpoint = torch.load(newer, weights_only=True)
    checkpoint["model"]["weight"][0, 0] = float("nan")
    torch.save(checkpoint, newer)
    with pytest.raises(CheckpointError, match="model_0000009.pth: weight is not finite"):
        load_checkpoint(newer)
    assert find_resume_checkpoint(tmp_path)[0] == older


def test_a_missing_checkpoint_is_named(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(CheckpointError, match=f"{missing}: no such file"):
        load_checkpoint(missing)


class _EmbeddedCode:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_a_checkpoint_with_embedded_code_is_refused_as_unsafe_not_called_truncated(tmp_path):
    path = tmp_path / "model_0000001.pth"
    torch.save({"kind": "clsa-suite/pretrain", "model": _EmbeddedCode()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "holds objects that safe loading (weights_only=True) refuses" in message, message
    assert "truncated" not in message and "print" in message and "\n" not in message


def test_a_checkpoint_whose_config_carries_a_python_tag_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    checkpoint = {"config": f"SEED: !!python/object/apply:os.system ['touch {marker}']\n"}
    with pytest.raises(CheckpointError, match="its config is not plain YAML"):
        check_same_run(tmp_path / "model_0000001.pth", checkpoint, "SEED: 0\n")
    assert not marker.exists()
