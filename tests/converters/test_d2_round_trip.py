"""The converted .pkl in real detectron2 R50-C4 models: every backbone weight loads, and computes what torchvision does.

detectron2's default config is the R50-C4 GeneralizedRCNN (Res5ROIHeads, backbone OUT_FEATURES res4);
its model zoo YAML files are not installed by the sdist build, so the RESNETS settings of the
suite's detection configs are applied to it here.
"""
import logging
import pickle

import pytest
import torch
from torchvision.transforms.v2 import functional as F

import common.d2compat  # noqa: F401  (before anything from detectron2)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

TORCHVISION_MEAN, TORCHVISION_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# Added by the suite's Res5ROIHeadsExtraNorm (BN after res5) and trained from scratch, as in MoCo.
NEW_IN_DETECTION = "roi_heads.res5.norm."


def c4_model(mask_on):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"  # the configs' naiveSyncBN is plain BN on one process
    cfg.MODEL.PIXEL_MEAN = [255 * m for m in TORCHVISION_MEAN]
    cfg.MODEL.PIXEL_STD = [255 * s for s in TORCHVISION_STD]
    cfg.INPUT.FORMAT = "RGB"
    return build_model(cfg).eval()


def load_pkl(model, path):
    """Loads as DetectionCheckpointer.load does and returns its incompatible keys."""
    logging.getLogger("detectron2").setLevel(logging.WARNING)  # its table of matched names is long
    checkpointer = DetectionCheckpointer(model)
    return checkpointer._load_model(checkpointer._load_file(str(path)))


@pytest.mark.parametrize("mask_on", [False, True], ids=["faster_rcnn_R_50_C4", "mask_rcnn_R_50_C4"])
def test_every_backbone_and_res5_weight_loads_and_nothing_is_unused(d2_pkl, mask_on):
    model = c4_model(mask_on)

    incompatible = load_pkl(model, d2_pkl)

    trunk = ("backbone.", "roi_heads.res5.")
    missing = [k for k in incompatible.missing_keys if k.startswith(trunk) and not k.startswith(NEW_IN_DETECTION)]
    assert missing == [] and incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    with open(d2_pkl, "rb") as f:
        pkl = pickle.load(f)["model"]
    loaded = {k: v for k, v in model.state_dict().items() if k.startswith(trunk) and "num_batches_tracked" not in k}
    assert len(loaded) == len(pkl)
    for name, value in loaded.items():  # backbone.res4.0.conv1.weight <- res4.0.conv1.weight, etc.
        assert torch.equal(value, torch.from_numpy(pkl[name.split(".", 1)[1]])), name


def test_detectron2_features_equal_torchvision_layers(d2_pkl, query_encoder):
    model = c4_model(mask_on=False)
    load_pkl(model, d2_pkl)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)  # RGB, as INPUT.FORMAT says
    features = {}
    for stage in ("res2", "res3", "res4"):
        getattr(model.backbone, stage).register_forward_hook(lambda m, i, out, s=stage: features.update({s: out}))
    # torchvision's pipeline; detectron2 subtracts 255 * mean instead, equal up to rounding.
    x = F.normalize(F.to_dtype(image, torch.float32, scale=True), TORCHVISION_MEAN, TORCHVISION_STD)[None]

    pixels = model.preprocess_image([{"image": image.float()}]).tensor
    assert (pixels - x).abs().max() <= 1e-6
    with torch.no_grad():
        # The same input on both sides: random weights amplify the 1e-7 rounding above to ~1e-4 by res4.
        features["res5"] = model.roi_heads.res5(model.backbone(x)["res4"])
        tv = query_encoder
        x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for stage, layer in zip(("res2", "res3", "res4", "res5"), (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            x = layer(x)
            assert features[stage].shape == x.shape
            assert (features[stage] - x).abs().max() <= 1e-4, stage
