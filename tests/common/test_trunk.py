import torch
import torchvision
from torch import nn

from common.backbone import Backbone
from common.trunk import LAYERS, build_trunk


def test_layers_give_gap_and_2x2_features_of_the_res5_map():
    res5 = torch.arange(2 * 4 * 7 * 7, dtype=torch.float32).reshape(2, 4, 7, 7)
    gap = LAYERS["res5"]()(res5)
    torch.testing.assert_close(gap, res5.mean((2, 3)))
    pooled = LAYERS["res5_2x2"]()(res5)
    assert pooled.shape == (2, 4 * 2 * 2)
    torch.testing.assert_close(pooled.reshape(2, 4, 2, 2)[:, :, 1, 0], res5[:, :, 1:7, 0:6].mean((2, 3)))


def test_res5_trunk_is_torchvision_resnet_without_its_classifier():
    weights = torchvision.models.resnet18()
    torch.manual_seed(0)
    for module in weights.modules():  # BN statistics other than the identity init, so eval mode shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    backbone = Backbone(weights.state_dict(), "torchvision", "resnet18", [])
    reference = weights.eval()
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(build_trunk(backbone, "res5")(x), reference(x))
