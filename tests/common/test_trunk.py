import pytest
import torch
import torchvision
from torch import nn

from common.backbone import Backbone
from common.trunk import LAYERS, build_trunk, resnet


def test_layers_give_gap_and_2x2_features_of_the_res5_map():
    res5 = torch.arange(2 * 4 * 7 * 7, dtype=torch.float32).reshape(2, 4, 7, 7)
    gap = LAYERS["res5"]()(res5)
    torch.testing.assert_close(gap, res5.mean((2, 3)))
    pooled = LAYERS["res5_2x2"]()(res5)
    assert pooled.shape == (2, 4 * 2 * 2)
    torch.testing.assert_close(pooled.reshape(2, 4, 2, 2)[:, :, 1, 0], res5[:, :, 1:7, 0:6].mean((2, 3)))


@pytest.mark.parametrize("arch, side", [("resnet18", 64), ("resnet18_cifar", 16)])
def test_res5_trunk_is_the_resnet_without_its_classifier(arch, side):
    weights = resnet(arch)
    torch.manual_seed(0)
    for module in weights.modules():  # BN statistics other than the identity init, so eval mode shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    backbone = Backbone(weights.state_dict(), "torchvision", arch, [])
    reference = weights.eval()
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(build_trunk(backbone, "res5")(x), reference(x))


def test_the_cifar_stem_keeps_four_times_the_res5_side_of_a_small_image():
    x = torch.randn(2, 3, 32, 32)
    trunk = nn.Sequential(*list(resnet("resnet18_cifar").children())[:-2]).eval()
    imagenet_trunk = nn.Sequential(*list(resnet("resnet18").children())[:-2]).eval()
    with torch.no_grad():
        # 32 px: stride 1 and no max-pool leave 32 / 8 = 4; torchvision's stride 2 and max-pool leave 1.
        assert trunk(x).shape == (2, 512, 4, 4) and imagenet_trunk(x).shape == (2, 512, 1, 1)
    cifar, imagenet = resnet("resnet50_cifar").state_dict(), torchvision.models.resnet50().state_dict()
    assert cifar.keys() == imagenet.keys()
    assert [k for k in cifar if cifar[k].shape != imagenet[k].shape] == ["conv1.weight"]
    assert cifar["conv1.weight"].shape == (64, 3, 3, 3)


@pytest.mark.parametrize(
    "arch, reference, divisor", [("resnet18_w32", "resnet18", 2), ("resnet50_w16_cifar", "resnet50_cifar", 4)]
)
def test_a_narrow_resnet_is_torchvisions_with_every_channel_count_divided(arch, reference, divisor):
    narrow, full = resnet(arch).state_dict(), resnet(reference).state_dict()
    assert narrow.keys() == full.keys()
    for name, tensor in full.items():
        # conv weights: out and in channels; BN: its channels; fc: its input; conv1 reads the image's 3
        divided = {"conv1.weight": (0,), "fc.weight": (1,), "fc.bias": ()}.get(name, range(min(tensor.dim(), 2)))
        shape = [size // divisor if dim in divided else size for dim, size in enumerate(tensor.shape)]
        assert tuple(narrow[name].shape) == tuple(shape), name
    assert resnet(arch)(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
