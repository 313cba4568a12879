import re

import pytest
import torch
import torchvision

from common.backbone import load_backbone
from common.errors import CheckpointError
from common.trunk import resnet
from tests.converters.converter_inputs import backbone_tensors, pretrain_checkpoint, random_resnet, zero_state_dict


@pytest.fixture(scope="module")
def resnet18():
    return random_resnet("resnet18")


def assert_same_tensors(actual, expected):
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert actual[name].dtype == torch.float32
        assert torch.equal(actual[name], value), name


def test_pretraining_checkpoint_yields_the_query_encoder_without_head_or_queue(pretrain_ckpt, query_encoder):
    backbone = load_backbone(pretrain_ckpt)

    assert (backbone.source_kind, backbone.arch) == ("clsa-suite pretraining checkpoint", "resnet50")
    assert_same_tensors(backbone.state_dict, backbone_tensors(query_encoder))
    saved = torch.load(pretrain_ckpt, weights_only=True)["model"]
    kept = {f"encoder_q.{k}" for k in backbone.state_dict}
    assert sorted(backbone.dropped) == sorted(set(saved) - kept)
    assert {
        "queue",
        "queue_ptr",
        "encoder_q.fc.0.weight",
        "encoder_q.fc.2.bias",
        "encoder_k.conv1.weight",
        "encoder_q.bn1.num_batches_tracked",
    } <= set(backbone.dropped)


def test_encoder_key_picks_the_momentum_encoder(pretrain_ckpt, key_encoder):
    assert_same_tensors(load_backbone(pretrain_ckpt, encoder="key").state_dict, backbone_tensors(key_encoder))


@pytest.mark.parametrize("encoder", ["query", "key"])
def test_moco_reference_checkpoint_is_recognised_by_its_module_prefix(moco_ckpt, encoder, query_encoder, key_encoder):
    backbone = load_backbone(moco_ckpt, encoder=encoder)

    assert backbone.source_kind == "MoCo/CLSA reference checkpoint"
    assert_same_tensors(backbone.state_dict, backbone_tensors(query_encoder if encoder == "query" else key_encoder))
    assert "module.queue" in backbone.dropped and "module.encoder_q.fc.2.weight" in backbone.dropped


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 90},
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    ],
    ids=["bare", "state_dict", "model", "module-prefix"],
)
def test_torchvision_state_dict_is_accepted_bare_or_wrapped(tmp_path, resnet18, wrap):
    torch.save(wrap(resnet18.state_dict()), tmp_path / "resnet18.pth")

    backbone = load_backbone(tmp_path / "resnet18.pth")

    assert (backbone.source_kind, backbone.arch) == ("torchvision state dict", "resnet18")
    assert_same_tensors(backbone.state_dict, backbone_tensors(resnet18))
    assert len(backbone.dropped) == 20 + 2  # every BN's num_batches_tracked, fc.weight, fc.bias


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet101", "resnet152"])
def test_arch_is_inferred_and_torchvision_loads_the_result_missing_only_fc(tmp_path, arch):
    torch.save(zero_state_dict(arch), tmp_path / "ckpt.pth")

    backbone = load_backbone(tmp_path / "ckpt.pth")

    assert backbone.arch == arch
    with torch.device("meta"):
        model = getattr(torchvision.models, backbone.arch)()
    incompatible = model.load_state_dict(backbone.state_dict, strict=False, assign=True)
    assert sorted(incompatible.missing_keys) == ["fc.bias", "fc.weight"]
    assert incompatible.unexpected_keys == []


@pytest.mark.parametrize("arch", ["resnet18_cifar", "resnet18_w16"])
def test_a_cifar_stem_or_a_narrow_width_is_recognised_from_conv1(tmp_path, arch):
    torch.save(resnet(arch).state_dict(), tmp_path / "ckpt.pth")
    backbone = load_backbone(tmp_path / "ckpt.pth")
    assert backbone.arch == arch
    incompatible = resnet(backbone.arch).load_state_dict(backbone.state_dict, strict=False)
    assert sorted(incompatible.missing_keys) == ["fc.bias", "fc.weight"] and incompatible.unexpected_keys == []


def test_half_precision_weights_come_back_as_float32(tmp_path, resnet18):
    half = {k: v.half() if v.is_floating_point() else v for k, v in resnet18.state_dict().items()}
    torch.save(half, tmp_path / "half.pth")

    backbone = load_backbone(tmp_path / "half.pth")

    assert_same_tensors(backbone.state_dict, {k: half[k].float() for k in backbone_tensors(resnet18)})


@pytest.mark.parametrize(
    "state, reason",
    [
        (
            lambda: zero_state_dict("resnext50_32x4d"),
            r"does not match torchvision resnet50: mis-shaped \(\d+\): layer1.0.bn1.bias \(128,\) != \(64,\)",
        ),
        (
            lambda: {k: v for k, v in zero_state_dict("resnet18").items() if k != "layer4.1.bn2.bias"},
            r"does not match torchvision resnet18: missing \(1\): layer4.1.bn2.bias",
        ),
        (lambda: zero_state_dict("vgg11"), r"no ResNet weights found \(keys: features.0.weight"),
        (
            lambda: {"model": {"backbone.res2.0.conv1.weight": torch.zeros(1)}, "iteration": 9},
            r"holds detectron2 model weights",
        ),
        (lambda: [torch.zeros(3)], r"holds a list, not a dict"),
    ],
    ids=["resnext", "missing-tensor", "vgg", "detectron2-pth", "list"],
)
def test_non_resnet_content_is_refused_naming_the_file_and_reason(tmp_path, state, reason):
    torch.save(state(), tmp_path / "other.pth")

    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'other.pth'}: {reason}"):
        load_backbone(tmp_path / "other.pth")


def test_encoder_key_of_a_single_network_is_an_error(tmp_path):
    torch.save(zero_state_dict("resnet18"), tmp_path / "r18.pth")

    with pytest.raises(CheckpointError, match="single torchvision ResNet; --encoder key needs a pretraining"):
        load_backbone(tmp_path / "r18.pth", encoder="key")


def test_pretraining_checkpoint_without_the_requested_encoder_is_an_error(tmp_path):
    ckpt = pretrain_checkpoint(random_resnet("resnet18"), random_resnet("resnet18"))
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("encoder_k.")}
    torch.save(ckpt, tmp_path / "ckpt.pth")

    with pytest.raises(CheckpointError, match=r"has no encoder_k\.\* weights for --encoder key"):
        load_backbone(tmp_path / "ckpt.pth", encoder="key")


@pytest.mark.parametrize("encoder", ["query", "key"])
def test_checkpoint_written_by_pretraining_is_read(tiny_pretrained, encoder):
    """The session's tiny pretraining run: after 4 steps the momentum encoder differs from the query one."""
    path = tiny_pretrained / "model_final.pth"
    saved = torch.load(path, weights_only=True)["model"]

    backbone = load_backbone(path, encoder=encoder)

    assert (backbone.source_kind, backbone.arch) == ("clsa-suite pretraining checkpoint", "resnet18")
    prefix, other = ("encoder_q.", "encoder_k.") if encoder == "query" else ("encoder_k.", "encoder_q.")
    expected = {
        name[len(prefix) :]: value
        for name, value in saved.items()
        if name.startswith(prefix) and not name.startswith(f"{prefix}fc.") and not name.endswith("num_batches_tracked")
    }
    assert_same_tensors(backbone.state_dict, expected)
    assert not torch.equal(backbone.state_dict["conv1.weight"], saved[f"{other}conv1.weight"])


def test_resume_and_conversion_raise_the_one_checkpoint_error_the_clis_catch(tmp_path):
    from pretrain.run_state import load_checkpoint

    path = tmp_path / "model_0000009.pth"
    path.write_bytes(b"PK\x03\x04 truncated")
    for read in (load_checkpoint, load_backbone):
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: "):
            read(path)
