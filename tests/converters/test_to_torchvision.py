import torch
import torchvision

from common.backbone import load_backbone
from converters import to_torchvision
from tests.converters.converter_inputs import backbone_tensors


def test_round_trip_is_bit_exact_and_torchvision_misses_only_fc(pretrain_ckpt, query_encoder, tmp_path, capsys):
    out = tmp_path / "r50.pth"

    assert to_torchvision.main([str(pretrain_ckpt), str(out)]) == 0

    state = torch.load(out, weights_only=True)
    expected = backbone_tensors(query_encoder)
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], v) and state[k].dtype == torch.float32 for k, v in expected.items())
    model = torchvision.models.resnet50().eval()
    incompatible = model.load_state_dict(state, strict=False)
    assert sorted(incompatible.missing_keys) == ["fc.bias", "fc.weight"] and incompatible.unexpected_keys == []
    model.fc = query_encoder.fc = torch.nn.Identity()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(image), query_encoder(image))
    assert "wrote:   " + str(out) in capsys.readouterr().out


def test_converted_file_converts_again_to_the_same_tensors(pretrain_ckpt, tmp_path):
    to_torchvision.main([str(pretrain_ckpt), str(tmp_path / "once.pth")])
    to_torchvision.main([str(tmp_path / "once.pth"), str(tmp_path / "twice.pth")])

    once, twice = (torch.load(tmp_path / name, weights_only=True) for name in ("once.pth", "twice.pth"))
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)
    assert load_backbone(tmp_path / "twice.pth").source_kind == "torchvision state dict"


def test_default_output_sits_beside_the_checkpoint(tmp_path, key_encoder, pretrain_ckpt):
    ckpt = tmp_path / "checkpoint_0003.pth"
    ckpt.symlink_to(pretrain_ckpt)

    assert to_torchvision.main([str(ckpt), "--encoder", "key"]) == 0

    state = torch.load(tmp_path / "checkpoint_0003.torchvision.pth", weights_only=True)
    assert torch.equal(state["layer4.2.bn3.running_var"], key_encoder.layer4[2].bn3.running_var)
