"""The frozen-feature view of a ResNet that every evaluation reads: conv1 .. layer4 plus a pooling.

Layers of the res5 (layer4) map, 7 x 7 at 224 px:
- "res5": global average pool, 2048-d for ResNet-50 (512-d for ResNet-18);
- "res5_2x2": AvgPool2d(6, stride 1) -> 2 x 2 x 2048 = 8192-d, the original VOC07 benchmark's feature.
"""

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

# An arch is a torchvision ResNet ("resnet18" .. "resnet152"), optionally narrowed ("_w32": res2 of
# 32 channels where torchvision has 64, every stage at the same fraction) and optionally with the
# CIFAR stem ("_cifar"), in that order: "resnet18_w32_cifar".
BLOCKS = {  # torchvision's block and blocks per stage of each depth
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}
TORCHVISION_WIDTH = 64
NARROW_WIDTHS = (16, 32)
CIFAR_STEM = "_cifar"


def width_suffix(width):
    return "" if width == TORCHVISION_WIDTH else f"_w{width}"


ARCHS = tuple(
    base + width_suffix(width) + stem
    for stem in ("", CIFAR_STEM)
    for width in (TORCHVISION_WIDTH, *NARROW_WIDTHS)
    for base in BLOCKS
)

LAYERS = {
    "res5": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    "res5_2x2": lambda: nn.Sequential(nn.AvgPool2d(6, stride=1), nn.Flatten()),
}


class _NarrowResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage `width / 64` as wide: its module names, its initialisation."""

    def __init__(self, block, layers, width, **kwargs):
        self.width = width  # read by _make_layer, which ResNet.__init__ calls before its init loop
        super().__init__(block, layers, **kwargs)
        self.fc = nn.Linear(8 * width * block.expansion, self.fc.out_features)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == TORCHVISION_WIDTH:  # the first stage: the stem before it narrows with it
            self.inplanes = self.width
            self.conv1 = nn.Conv2d(3, self.width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = self._norm_layer(self.width)
        return super()._make_layer(block, planes * self.width // TORCHVISION_WIDTH, blocks, stride, dilate)


def parse_arch(arch):
    """(torchvision name, res2 width, CIFAR stem?) of an arch of ARCHS."""
    base = arch.removesuffix(CIFAR_STEM)
    name, _, width = base.partition("_w")
    return name, int(width or TORCHVISION_WIDTH), base != arch


def resnet(arch, **kwargs):
    """torchvision's ResNet `arch` (of ARCHS) at its initialisation, built with `kwargs`.

    With "_wW", a narrow ResNet: res2 has W channels and every later stage twice the one before, so a
    ResNet-18 at W = 32 has a quarter of the weights and of the convolutions' work, for small-image
    research and the CPU learning check. With the suffix "_cifar", the stem of small-image
    self-supervised work (SimCLR's and solo-learn's CIFAR models): conv1 a 3 x 3 stride-1 convolution
    and no max-pool. A 32-px image then keeps a 4 x 4 res5 map instead of 1 x 1, at 16 times the
    compute. Every name is torchvision's.
    """
    name, width, cifar_stem = parse_arch(arch)
    if width == TORCHVISION_WIDTH:
        model = getattr(torchvision.models, name)(**kwargs)
    else:
        model = _NarrowResNet(*BLOCKS[name], width=width, **kwargs)
    if cifar_stem:
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
