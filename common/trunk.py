"""The frozen-feature view of a ResNet that every evaluation reads: conv1 .. layer4 plus a pooling.

Layers of the res5 (layer4) map, 7 x 7 at 224 px:
- "res5": global average pool, 2048-d for ResNet-50 (512-d for ResNet-18);
- "res5_2x2": AvgPool2d(6, stride 1) -> 2 x 2 x 2048 = 8192-d, the original VOC07 benchmark's feature.
"""

import torchvision
from torch import nn

LAYERS = {
    "res5": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    "res5_2x2": lambda: nn.Sequential(nn.AvgPool2d(6, stride=1), nn.Flatten()),
}


def build_resnet(backbone):
    """torchvision ResNet holding a common.backbone.Backbone's weights (fc left at its init)."""
    model = getattr(torchvision.models, backbone.arch)()
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
