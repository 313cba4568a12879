"""The detection configs resolve to the MoCo/CLSA transfer protocol, value by value."""

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import detection  # noqa: F401

CONFIGS = {name: f"detection/{name}.yaml" for name in ("voc0712_R50_C4", "coco_R50_C4", "coco_R50_C4_1x")}


def load(name):
    cfg = get_cfg()
    cfg.merge_from_file(CONFIGS[name])
    return cfg


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_config_uses_the_protocol_backbone_and_normalisation(name):
    cfg = load(name)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone" and cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.MODEL.RESNETS.OUT_FEATURES == ["res4"], "C4: the RPN and the RoI pooler read res4"
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN"
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.280, 103.530]
    assert cfg.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]
    assert cfg.TEST.PRECISE_BN.ENABLED is True
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.BASE_LR == 0.02
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 8


def test_voc_config_is_07_12_trainval_to_07_test_24k():
    cfg = load("voc0712_R50_C4")
    assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval")
    assert cfg.DATASETS.TEST == ("voc_2007_test",)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20 and cfg.MODEL.MASK_ON is False
    assert cfg.SOLVER.MAX_ITER == 24000 and cfg.SOLVER.STEPS == (18000, 22000) and cfg.SOLVER.WARMUP_ITERS == 100
    assert cfg.INPUT.MIN_SIZE_TRAIN == tuple(range(480, 801, 32)) and cfg.INPUT.MIN_SIZE_TEST == 800


@pytest.mark.parametrize(
    "name,max_iter,steps", [("coco_R50_C4", 180000, (120000, 160000)), ("coco_R50_C4_1x", 90000, (60000, 80000))]
)
def test_coco_configs_are_mask_rcnn_on_2017_with_their_schedule(name, max_iter, steps):
    cfg = load(name)
    assert cfg.MODEL.MASK_ON is True and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    assert cfg.SOLVER.MAX_ITER == max_iter and cfg.SOLVER.STEPS == steps
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800) and cfg.INPUT.MIN_SIZE_TEST == 800


def test_extra_norm_head_adds_a_bn_after_res5_and_feeds_it_to_the_predictors():
    cfg = load("voc0712_R50_C4")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    res5 = model.roi_heads.res5
    assert list(dict(res5.named_children()))[-1] == "norm"
    # naiveSyncBN is a BatchNorm2d over res5's 2048 output channels.
    assert isinstance(res5.norm, __import__("torch").nn.BatchNorm2d) and res5.norm.num_features == 2048
    assert "roi_heads.res5.norm.running_var" in model.state_dict()
