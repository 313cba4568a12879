"""MODEL.WEIGHTS is loaded safely and never leaves the backbone silently at random init."""

import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import detection  # noqa: F401
from detection.pretrained_weights import PretrainedWeightsCheckpointer


@pytest.fixture(scope="module")
def model():
    cfg = get_cfg()
    cfg.merge_from_file("detection/voc0712_R50_C4.yaml")
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def _backbone_pickle(model, path, author="clsa-suite", protocol=4):
    """A converter-style .pkl made from detectron2's own names: backbone.X -> X, roi_heads.res5.X -> res5.X."""
    weights = {}
    for name, value in model.state_dict().items():
        if name.startswith("backbone."):
            weights[name[len("backbone.") :]] = value
        elif name.startswith("roi_heads.res5.") and not name.startswith("roi_heads.res5.norm."):
            weights[name[len("roi_heads.") :]] = value
    weights = {k: torch.randn_like(v.float()).numpy() for k, v in weights.items() if "num_batches" not in k}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": author, "matching_heuristics": True}, f, protocol=protocol)
    return weights


@pytest.mark.parametrize("protocol", [4, 5])
def test_converted_backbone_loads_every_weight_except_the_new_res5_norm(model, tmp_path, protocol):
    weights = _backbone_pickle(model, tmp_path / "w.pkl", protocol=protocol)
    incompatible = PretrainedWeightsCheckpointer(model)._load_model(
        PretrainedWeightsCheckpointer(model)._load_file(str(tmp_path / "w.pkl"))
    )
    assert {k.rsplit(".", 1)[0] for k in incompatible.missing_keys if "backbone" in k or "res5" in k} == {
        "roi_heads.res5.norm"
    }
    state = model.state_dict()
    np.testing.assert_array_equal(state["backbone.res4.5.conv3.weight"].numpy(), weights["res4.5.conv3.weight"])
    np.testing.assert_array_equal(
        state["roi_heads.res5.2.conv1.norm.running_var"].numpy(), weights["res5.2.conv1.norm.running_var"]
    )


def test_unconverted_pretraining_checkpoint_is_refused_with_the_fix(model, tmp_path):
    path = tmp_path / "model_final.pth"
    torch.save({"kind": "clsa-suite/pretrain", "model": {"encoder_q.conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    with pytest.raises(ValueError, match="backbone/res5 weights unset.*converters/to_d2.py"):
        PretrainedWeightsCheckpointer(model).load(str(path))


def test_a_file_that_is_no_checkpoint_is_refused_naming_it(model, tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="notes.pkl: not a readable detectron2 checkpoint"):
        PretrainedWeightsCheckpointer(model).load(str(path))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pkl", "wb") as f:
        pickle.dump({"model": {"x": _RunsCode()}, "__author__": "x"}, f)
    with pytest.raises(ValueError, match="refusing to load posix.system"):
        PretrainedWeightsCheckpointer(model).load("evil.pkl")
    assert not (tmp_path / "pwned").exists()
