import pytest
import torch

from common.backbone import load_backbone
from transfer.frozen_resnet import BackboneChanged, build_model, check_backbone_unchanged


def test_sanity_check_fires_when_a_backbone_weight_changes(r18_weights):
    model, reference = build_model(load_backbone(r18_weights), num_classes=10)
    with torch.no_grad():
        model.fc.weight += 1.0  # fc is meant to learn: no alarm
    check_backbone_unchanged(model, reference)
    with torch.no_grad():
        model.layer3[0].conv2.weight[0, 0, 0, 0] += 1e-6
    with pytest.raises(BackboneChanged, match="layer3.0.conv2.weight"):
        check_backbone_unchanged(model, reference)


def test_only_fc_trains_and_it_starts_at_n0_001(r18_weights):
    model, _ = build_model(load_backbone(r18_weights), num_classes=1000)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert abs(model.fc.weight.std().item() - 0.01) < 1e-3 and model.fc.bias.abs().max() == 0
