"""Converts a pretrained ResNet-50 into a detectron2 backbone: `python converters/to_d2.py CKPT [OUT]`.

The .pkl keeps detectron2's backbone names (stem.conv1, res2..res5, convK.norm, shortcut.norm).
detectron2's name matching then loads res2..res4 into `backbone.*` and res5 into the C4 head's
`roi_heads.res5.*`. Models using it must match torchvision's conventions: RGB input, torchvision
pixel mean/std and MODEL.RESNETS.STRIDE_IN_1X1 False.
"""

import pickle
import re
import sys

import torch

from common.backbone import key_mismatch
from common.errors import CheckpointError
from common.io import atomic_path
from converters.cli import run

AUTHOR = "clsa-suite"  # without __author__, detectron2 reads a .pkl as Caffe2 and renames its keys

_TORCHVISION_TO_D2 = [
    (re.compile(r"^conv1\."), "stem.conv1."),
    (re.compile(r"^bn1\."), "stem.conv1.norm."),
    (re.compile(r"^layer(\d)"), lambda m: f"res{int(m.group(1)) + 1}"),
    (re.compile(r"\.bn(\d)\."), r".conv\1.norm."),
    (re.compile(r"\.downsample\.0\."), ".shortcut."),
    (re.compile(r"\.downsample\.1\."), ".shortcut.norm."),
]


def d2_name(torchvision_name):
    for pattern, replacement in _TORCHVISION_TO_D2:
        torchvision_name = pattern.sub(replacement, torchvision_name)
    return torchvision_name


def d2_resnet50_shapes():
    """Names and shapes of detectron2's own ResNet-50 backbone, res2..res5, as a .pkl carries them."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    with torch.device("meta"):  # shapes only
        backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    return {k: tuple(v.shape) for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}


def to_d2_state_dict(backbone, path):
    """detectron2-named float32 numpy arrays; raises CheckpointError unless they fit detectron2's R50."""
    if backbone.arch != "resnet50":
        raise CheckpointError(
            path, f"holds a {backbone.arch}; the detection configs are R50-C4, so to_d2 converts resnet50 only"
        )
    state = {d2_name(k): v for k, v in backbone.state_dict.items()}
    mismatch = key_mismatch(state, d2_resnet50_shapes())
    if mismatch:
        raise CheckpointError(path, f"mapped keys do not fit detectron2's ResNet-50: {mismatch}")
    return {k: v.numpy() for k, v in state.items()}


def write_d2(backbone, path, out):
    model = to_d2_state_dict(backbone, path)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        pickle.dump({"model": model, "__author__": AUTHOR, "matching_heuristics": True}, f)


def main(argv=None):
    return run(argv, __doc__.splitlines()[0], ".pkl", write_d2)


if __name__ == "__main__":
    sys.exit(main())
