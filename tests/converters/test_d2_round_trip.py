"""The converted .pkl in the suite's detection models: every weight loads, and computes what torchvision does."""

import pickle
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torchvision.transforms.v2 import functional as F

import detection  # registers Res5ROIHeadsExtraNorm
from common.constants import IMAGENET_MEAN, IMAGENET_STD
from detection.pretrained_weights import PretrainedWeightsCheckpointer

# Added by Res5ROIHeadsExtraNorm (a norm after res5) and trained from scratch, as in MoCo.
NEW_IN_DETECTION = "roi_heads.res5.norm."
CONFIGS = {"voc_faster_rcnn": "voc0712_R50_C4.yaml", "coco_mask_rcnn": "coco_R50_C4.yaml"}


def detection_model(name):
    """The suite's C4 model on the CPU (its naiveSyncBN is plain BN on one process)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(Path(detection.__file__).parent / CONFIGS[name]))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg).eval()


def load_pkl(model, path):
    """Loads as tools/train_net.py does (its arrays-only unpickler and key check) and returns the
    incompatible keys."""
    checkpointer = PretrainedWeightsCheckpointer(model)
    return checkpointer._load_model(checkpointer._load_file(str(path)))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_backbone_and_res5_weight_loads_and_nothing_is_unused(d2_pkl, name):
    model = detection_model(name)

    incompatible = load_pkl(model, d2_pkl)

    trunk = ("backbone.", "roi_heads.res5.")
    new = {k for k in model.state_dict() if k.startswith(NEW_IN_DETECTION) and "num_batches_tracked" not in k}
    assert {k for k in incompatible.missing_keys if k.startswith(trunk)} == new and len(new) == 4
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    with open(d2_pkl, "rb") as f:
        pkl = pickle.load(f)["model"]
    loaded = {
        k: v
        for k, v in model.state_dict().items()
        if k.startswith(trunk) and not k.startswith(NEW_IN_DETECTION) and "num_batches_tracked" not in k
    }
    assert len(loaded) == len(pkl)
    for key, value in loaded.items():  # backbone.res4.0.conv1.weight <- res4.0.conv1.weight, etc.
        assert torch.equal(value, torch.from_numpy(pkl[key.split(".", 1)[1]])), key


def test_detectron2_features_equal_torchvision_layers(d2_pkl, query_encoder):
    model = detection_model("voc_faster_rcnn")
    load_pkl(model, d2_pkl)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)  # RGB, as INPUT.FORMAT says
    features = {}
    for stage in ("res2", "res3", "res4"):
        getattr(model.backbone, stage).register_forward_hook(lambda m, i, out, s=stage: features.update({s: out}))
    # torchvision's pipeline; detectron2 subtracts 255 * mean instead, equal up to rounding.
    x = F.normalize(F.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)[None]

    pixels = model.preprocess_image([{"image": image.float()}]).tensor
    assert (pixels - x).abs().max() <= 1e-6
    with torch.no_grad():
        # The same input on both sides: random weights amplify the 1e-7 rounding above to ~1e-4 by res4.
        tv = query_encoder
        res5_blocks = model.roi_heads.res5[: len(tv.layer4)]  # without the new norm
        features["res5"] = res5_blocks(model.backbone(x)["res4"])
        x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for stage, layer in zip(("res2", "res3", "res4", "res5"), (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            x = layer(x)
            assert features[stage].shape == x.shape
            assert (features[stage] - x).abs().max() <= 1e-4, stage
