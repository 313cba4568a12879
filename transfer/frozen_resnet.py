"""A pretrained ResNet with a fresh fc that alone learns, and the check that its backbone stayed
frozen (MoCo's main_lincls sanity_check), for the protocols that train a linear classifier on images."""

import torch
from torch import nn

from common.trunk import build_resnet


class BackboneChanged(RuntimeError):
    pass


def build_model(backbone, num_classes):
    """(ResNet with frozen backbone and a fresh fc, copy of the backbone tensors for the sanity check).
    fc starts at N(0, 0.01), bias 0, as in MoCo's linear evaluation."""
    model = build_resnet(backbone)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.normal_(model.fc.weight, 0, 0.01)
    nn.init.zeros_(model.fc.bias)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("fc.")
    reference = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    return model, reference


def check_backbone_unchanged(model, reference):
    """Raises BackboneChanged naming the first tensor of `reference` that differs in `model`."""
    current = model.state_dict()
    for name, value in reference.items():
        if not torch.equal(current[name].cpu(), value):
            raise BackboneChanged(f"backbone tensor {name} changed during linear evaluation; it must stay frozen")
