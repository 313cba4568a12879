"""The frozen-feature view of a ResNet that every evaluation reads: conv1 .. layer4 plus a pooling.

Layers of the res5 (layer4) map, 7 x 7 at 224 px:
- "res5": global average pool, 2048-d for ResNet-50 (512-d for ResNet-18);
- "res5_2x2": AvgPool2d(6, stride 1) -> 2 x 2 x 2048 = 8192-d, the original VOC07 benchmark's feature.
"""

import torchvision
from torch import nn

# The arch suffix of the CIFAR stem (resnet): ARCHS below are "resnet18" .. "resnet152" and the same
# five with it.
CIFAR_STEM = "_cifar"
BASE_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
ARCHS = (*BASE_ARCHS, *(arch + CIFAR_STEM for arch in BASE_ARCHS))

LAYERS = {
    "res5": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    "res5_2x2": lambda: nn.Sequential(nn.AvgPool2d(6, stride=1), nn.Flatten()),
}


def resnet(arch, **kwargs):
    """torchvision's ResNet `arch` (of ARCHS) at its initialisation, built with `kwargs`.

    With the suffix "_cifar", the stem of small-image self-supervised work (SimCLR's and solo-learn's
    CIFAR models): conv1 a 3 x 3 stride-1 convolution and no max-pool. A 32-px image then keeps a 4 x 4
    res5 map instead of 1 x 1, at 16 times the compute; every other name and shape is torchvision's.
    """
    base = arch.removesuffix(CIFAR_STEM)
    model = getattr(torchvision.models, base)(**kwargs)
    if base != arch:
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's
        model.maxpool = nn.Identity()
    return model


def build_resnet(backbone):
    """torchvision ResNet holding a common.backbone.Backbone's weights (fc left at its init)."""
    model = resnet(backbone.arch)
    missing, unexpected = model.load_state_dict(backbone.state_dict, strict=False)
    assert not unexpected and all(k.startswith("fc.") for k in missing), (missing, unexpected)
    return model


def pooled_trunk(resnet, layer):
    """conv1 .. layer4 of a torchvision ResNet (its own modules: the weights are shared) plus the
    pooling of `layer`."""
    return nn.Sequential(*list(resnet.children())[:-2], LAYERS[layer]())


def build_trunk(backbone, layer):
    """Frozen conv trunk (conv1 .. layer4) plus the pooling of `layer`, in eval mode."""
    return pooled_trunk(build_resnet(backbone), layer).eval().requires_grad_(False)
