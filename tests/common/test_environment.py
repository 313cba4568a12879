import importlib.machinery
import subprocess
import sys
import textwrap

import pytest
import torch

from common import environment


def test_detectron2_imports_alone_in_any_order(tmp_path):
    # A user's own script: detectron2 first, nothing of the suite imported before it.
    script = textwrap.dedent("""
        import sys
        from detectron2.data import DatasetCatalog
        from detectron2.engine import DefaultTrainer
        from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
        from detectron2.layers import ROIAlign
        from detectron2.modeling import build_model
        from detectron2.data.transforms import ExtentTransform
        import numpy as np
        assert ExtentTransform((0, 0, 4, 4), (2, 2)).interp == 2  # PIL's BILINEAR
        assert not [m for m in sys.modules if m.split(".")[0] in ("common", "detection", "pretrain")]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "detectron2" in environment.describe()


@pytest.mark.skipif(environment.DETECTRON2_HAS_COMPILED_OPS, reason="this detectron2 has its compiled ops")
def test_missing_compiled_ops_name_the_fix():
    from detectron2 import _C

    assert "without its C++ ops" in _C.get_compiler_version()
    with pytest.raises(RuntimeError, match="built without its C\\+\\+ ops.*git\\+https"):
        _C.deform_conv_forward()


def test_compiled_ops_are_told_by_an_extension_module(monkeypatch):
    class Spec:
        origin = f"/site-packages/detectron2/_C{importlib.machinery.EXTENSION_SUFFIXES[0]}"

    monkeypatch.setattr(environment.importlib.util, "find_spec", lambda name: Spec)
    assert environment._has_compiled_ops()
    Spec.origin = "/site-packages/detectron2/_C.py"
    assert not environment._has_compiled_ops()


def test_map_dataset_falls_back_when_the_mapper_returns_none():
    from detectron2.data.common import MapDataset

    # Item 0 maps to None; MapDataset must draw another index instead of failing.
    dataset = MapDataset(list(range(4)), lambda x: None if x == 0 else x * 10)
    assert dataset[0] in (10, 20, 30)


def test_model_zoo_configs_are_installed():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_C4_1x.yaml"))
    assert cfg.MODEL.RESNETS.DEPTH == 50


def test_lr_scheduler_hook_checkpoints_a_torch_scheduler():
    from detectron2.engine.hooks import LRScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = LRScheduler(optimizer, scheduler).state_dict()
    assert state["last_epoch"] == 3

    fresh_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = torch.optim.lr_scheduler.StepLR(fresh_optimizer, step_size=1, gamma=0.5)
    LRScheduler(fresh_optimizer, fresh).load_state_dict(state)
    assert fresh.last_epoch == 3 and fresh.get_last_lr() == scheduler.get_last_lr()
