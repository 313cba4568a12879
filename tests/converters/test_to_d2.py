import json
import os
import pickle
import re

import numpy as np
import pytest
import torch

from common.backbone import Backbone, load_backbone
from common.errors import CheckpointError
from common.io import sha256_file
from converters import to_d2, to_torchvision
from tests.converters.converter_inputs import zero_state_dict


def exit_code(converter, argv):
    """The converter's exit status: what main returns, or what it exits with on bad input."""
    try:
        return converter.main(argv)
    except SystemExit as exit_:
        return exit_.code


def test_pkl_holds_float32_arrays_under_detectron2_names_and_an_author(d2_pkl, query_encoder):
    with open(d2_pkl, "rb") as f:
        data = pickle.load(f)

    assert data["__author__"] == "clsa-suite" and data["matching_heuristics"] is True
    model = data["model"]
    assert len(model) == 265 and all(v.dtype == np.float32 for v in model.values())
    assert not any("fc" in name or "num_batches_tracked" in name for name in model)
    q = query_encoder
    hand_checked = {
        "stem.conv1.weight": q.conv1.weight,
        "stem.conv1.norm.running_var": q.bn1.running_var,
        "res2.0.shortcut.weight": q.layer1[0].downsample[0].weight,
        "res2.0.shortcut.norm.bias": q.layer1[0].downsample[1].bias,
        "res3.1.conv2.weight": q.layer2[1].conv2.weight,
        "res4.5.conv1.norm.running_mean": q.layer3[5].bn1.running_mean,
        "res5.2.conv3.norm.weight": q.layer4[2].bn3.weight,
    }
    for name, tensor in hand_checked.items():
        assert np.array_equal(model[name], tensor.detach().numpy()), name


def test_summary_names_source_kind_counts_and_output(pretrain_ckpt, tmp_path, capsys):
    assert exit_code(to_d2, [str(pretrain_ckpt), str(tmp_path / "out.pkl")]) == 0

    startup, *lines = capsys.readouterr().out.splitlines()
    assert startup.startswith("environment: torch ")
    assert lines[0] == f"source:  {pretrain_ckpt} (clsa-suite pretraining checkpoint, resnet50, --encoder query)"
    assert lines[1] == "kept:    265 tensors"
    assert lines[2].startswith(
        "dropped: 381 tensors: encoder_k.* (265), *.num_batches_tracked (106), "
        "encoder_q.fc.* (4), encoder_k.fc.* (4), queue (1), queue_ptr (1)"
    )
    assert lines[3] == f"wrote:   {tmp_path / 'out.pkl'}"


def test_mapped_keys_that_do_not_fit_detectron2_are_listed(tmp_path):
    state = {
        k: v
        for k, v in zero_state_dict("resnet50").items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    del state["layer4.2.conv3.weight"]
    state["layer4.2.extra.weight"] = torch.zeros(3)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    backbone = Backbone(state_dict=state, source_kind="test", arch="resnet50")

    with pytest.raises(
        CheckpointError,
        match=r"^x.pth: mapped keys do not fit detectron2's ResNet-50: "
        r"missing \(1\): res5.2.conv3.weight; unexpected \(1\): res5.2.extra.weight; "
        r"mis-shaped \(1\): res2.0.conv1.weight \(64, 64, 3, 3\) != \(64, 64, 1, 1\)$",
    ):
        to_d2.to_d2_state_dict(backbone, "x.pth")


def _write_bad_input(kind, tmp_path, d2_pkl):
    path = tmp_path / {"d2-pkl": "model.pkl", "json": "metrics.json"}.get(kind, f"{kind}.pth")
    if kind == "d2-pkl":
        path.write_bytes(d2_pkl.read_bytes())
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "json":
        path.write_text(json.dumps({"iteration": 9, "loss": 1.5}))
    elif kind == "truncated":
        torch.save(zero_state_dict("resnet50"), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.touch()
    elif kind == "numpy-inside":
        torch.save({"state_dict": zero_state_dict("resnet50"), "rng": np.random.get_state()}, path)
    elif kind == "resnet18":
        torch.save(zero_state_dict("resnet18"), path)
    return path


BAD_INPUTS = {
    "d2-pkl": "is a detectron2 .pkl \\(already converted",
    "random-bytes": "is not a PyTorch checkpoint",
    "json": "is a JSON/text file, not a PyTorch checkpoint",
    "truncated": "truncated or corrupt PyTorch checkpoint \\(.*\\); copy or save it again",
    "empty": "the file is empty",
    "missing": "no such file",
    "numpy-inside": "holds objects that safe loading \\(weights_only=True\\) refuses: .*numpy",
    "resnet18": "holds a resnet18; the detection configs are R50-C4, so to_d2 converts resnet50 only",
}


@pytest.mark.parametrize(
    "kind, converter",
    [
        *[(kind, converter) for kind in BAD_INPUTS if kind != "resnet18" for converter in (to_d2, to_torchvision)],
        ("resnet18", to_d2),  # to_torchvision converts any torchvision ResNet
    ],
    ids=lambda x: x if isinstance(x, str) else x.__name__.split(".")[-1],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(kind, converter, tmp_path, d2_pkl, capsys):
    ckpt = _write_bad_input(kind, tmp_path, d2_pkl)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    assert exit_code(converter, [str(ckpt), str(out_dir / "converted")]) == 2

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {ckpt}: ")
    assert re.search(BAD_INPUTS[kind], err), err
    assert os.listdir(out_dir) == []


def test_refuses_to_overwrite_its_input(tmp_path):
    ckpt = tmp_path / "resnet50.pkl"  # a torchvision state dict saved under a .pkl name
    torch.save(zero_state_dict("resnet50"), ckpt)
    digest = sha256_file(ckpt)

    assert exit_code(to_d2, [str(ckpt)]) == 2
    assert sha256_file(ckpt) == digest and load_backbone(ckpt).arch == "resnet50"


@pytest.mark.parametrize("converter", [to_d2, to_torchvision], ids=lambda c: c.__name__.split(".")[-1])
def test_an_existing_output_is_replaced_only_by_the_same_conversion_or_with_overwrite(
    converter, pretrain_ckpt, tmp_path, capsys
):
    out = tmp_path / "converted"
    out.write_text("an unrelated file\n")
    assert exit_code(converter, [str(pretrain_ckpt), str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {out}: exists and holds something else; pass --overwrite to replace it, or another OUT\n"
    assert out.read_text() == "an unrelated file\n" and os.listdir(tmp_path) == ["converted"]
    assert exit_code(converter, [str(pretrain_ckpt), str(out), "--overwrite"]) == 0
    converted = sha256_file(out)
    assert exit_code(converter, [str(pretrain_ckpt), str(out)]) == 0  # the same checkpoint again: the same bytes
    assert sha256_file(out) == converted and os.listdir(tmp_path) == ["converted"]


def test_a_folder_or_unwritable_output_is_a_one_line_error(pretrain_ckpt, tmp_path, capsys):
    assert exit_code(to_d2, [str(pretrain_ckpt), str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: is a folder; pass the output file's path\n"
    (tmp_path / "file").write_text("")
    assert exit_code(to_d2, [str(pretrain_ckpt), str(tmp_path / "file" / "out.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {tmp_path / 'file' / 'out.pkl'} (") and err.count("\n") == 1
