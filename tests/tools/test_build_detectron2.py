"""tools/build_detectron2.py: its corrections, checked on the detectron2 the set-up built with them, and
its refusal of an sdist that differs from the one it was written for."""

import subprocess
import sys
import textwrap

import pytest
import torch

from common import environment
from tools.build_detectron2 import EDITS, SourceMismatch, correct_sources


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


@pytest.mark.skipif(environment.DETECTRON2_HAS_COMPILED_OPS, reason="this detectron2 has its compiled ops")
def test_missing_compiled_ops_name_the_fix():
    from detectron2 import _C

    assert "without its C++ ops" in _C.get_compiler_version()
    with pytest.raises(RuntimeError, match="built without its C\\+\\+ ops.*git\\+https"):
        _C.deform_conv_forward()


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


def fake_sdist(root, skip=None):
    """A tree holding exactly the text each edit expects, as often as it expects it (but `skip`'s)."""
    for rel_path, old, _new, occurrences, _why in EDITS:
        path = root / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        count = 0 if (rel_path, old) == skip else occurrences
        path.write_text((path.read_text() if path.exists() else "") + (old + "\n") * count)
    (root / "detectron2" / "mask.py").write_text("a = np.float(x) + np.float32(y)\nb = np.bool_\n")


def test_corrections_apply_once_and_leave_the_numpy_types_that_still_exist(tmp_path):
    fake_sdist(tmp_path)
    correct_sources(tmp_path)
    assert (tmp_path / "detectron2" / "mask.py").read_text() == "a = float(x) + np.float32(y)\nb = np.bool_\n"
    for rel_path, old, new, _occurrences, _why in EDITS:
        text = (tmp_path / rel_path).read_text()
        assert new in text and (old not in text or old in new), rel_path
    with pytest.raises(SourceMismatch, match="already has a _C module"):
        correct_sources(tmp_path)


def test_an_sdist_without_an_expected_text_is_refused_naming_the_file(tmp_path):
    rel_path, old, *_ = EDITS[3]
    fake_sdist(tmp_path, skip=(rel_path, old))
    with pytest.raises(SourceMismatch, match=f"{rel_path}: expected .* 1 time\\(s\\), found it 0"):
        correct_sources(tmp_path)
