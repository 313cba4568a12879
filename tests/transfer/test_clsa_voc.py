"""The CLSA reference VOC07 protocol (transfer/voc07_linear.py --protocol clsa) on the tiny synthetic VOC2007."""

import json
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image

from common.backbone import load_backbone
from common.errors import ConfigError, RecordMismatchError
from transfer import clsa_voc, voc07_linear
from transfer.frozen_resnet import build_model
from transfer.voc import read_split

# The reference's VOC normalisation.
MEAN, STD = (0.4573, 0.4388, 0.4073), (0.2675, 0.2638, 0.2777)


def run_protocol(weights, root, out, *flags):
    args = voc07_linear.parse_args(
        [
            "--protocol",
            "clsa",
            "--weights",
            str(weights),
            "--data-root",
            str(root / "VOC2007"),
            "--output-dir",
            str(out),
            "--crop-size",
            "64",
            "--resize",
            "72",
            "--workers",
            "0",
            *map(str, flags),
        ]
    )
    return voc07_linear.main(args)


def test_protocol_defaults_are_the_reference_hyperparameters():
    args = voc07_linear.parse_args(["--protocol", "clsa", "--weights", "w.pth"])
    hyperparameters = (args.batch_size, args.epochs, args.lr, args.t_max, args.crop_size, args.resize)
    assert hyperparameters == (16, 100, 0.05, 12, 300, 330)
    features = voc07_linear.parse_args(["--weights", "w.pth"])
    assert (features.protocol, features.batch_size, features.workers) == ("features", 256, 2)


def test_val_normalises_with_the_voc_mean_and_std_after_resize_and_centre_crop():
    image = Image.new("RGB", (500, 375), (200, 100, 50))
    out = clsa_voc.build_transforms(300, 330)["val"](image)
    assert out.shape == (3, 300, 300)
    expected = [(c / 255 - m) / s for c, m, s in zip((200, 100, 50), MEAN, STD)]
    assert torch.allclose(out.mean((1, 2)), torch.tensor(expected), atol=1e-5)
    assert torch.allclose(out, out[:, :1, :1])  # a constant image stays constant: no padding, no jitter


def test_test_transform_is_five_crops_of_the_resized_image():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 120, 3), np.uint8))
    crops = clsa_voc.build_transforms(64, 72)["test"](image)
    assert crops.shape == (5, 3, 64, 64)
    # torchvision's v1 functional API, step by step: shorter side 72, then the four corners and the centre.
    expected = [F.normalize(F.to_tensor(c), MEAN, STD) for c in F.five_crop(F.resize(image, 72), 64)]
    assert torch.allclose(crops, torch.stack(expected), atol=1e-6)


def test_train_transform_is_the_references_augmentation():
    train = clsa_voc.build_transforms(300, 330)["train"]
    resize, choice, flip, rotation = train.transforms[:4]
    assert resize.size == [300, 300]
    jitter, grey = choice.transforms
    assert jitter.brightness == (0.8, 1.2) and jitter.contrast is None and grey.p == 0.25
    assert flip.p == 0.25 and rotation.degrees == [-25.0, 25.0]
    assert train(Image.new("RGB", (500, 375))).shape == (3, 300, 300)


def test_training_adapts_the_bn_statistics_and_fc_but_no_backbone_weight(r18_weights, synthetic_root):
    torch.manual_seed(0)
    model, _ = build_model(load_backbone(r18_weights), 20)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = clsa_voc.VocImages(
        *read_split(synthetic_root / "VOC2007", "train"), clsa_voc.build_transforms(64, 72)["train"]
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.05, momentum=0.9)
    clsa_voc.train_one_epoch(model, loader, optimizer, torch.device("cpu"), world=1, show=False, desc="")
    after = model.state_dict()
    bns = [name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 20
    for bn in bns:
        assert not torch.equal(before[f"{bn}.running_mean"], after[f"{bn}.running_mean"]), bn
        assert not torch.equal(before[f"{bn}.running_var"], after[f"{bn}.running_var"]), bn
    for name, param in model.named_parameters():
        assert torch.equal(before[name], param) != name.startswith("fc."), name
    assert set(clsa_voc.adapted_state(model)) == {"fc.weight", "fc.bias"} | {
        k for k in after if k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }

    # Evaluation is in eval mode: it leaves the statistics alone.
    clsa_voc.predict(model, dataset, torch.device("cpu"), batch_size=16, workers=0, show=False)
    assert all(torch.equal(after[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow  # three short runs of ResNet-18 at 64 px: ~40 s on 2 busy cores
def test_chooses_the_epoch_on_val_tests_it_and_resumes_to_the_same_result(r18_weights, synthetic_root, tmp_path):
    whole = run_protocol(r18_weights, synthetic_root, tmp_path / "whole", "--epochs", "3")
    history = whole["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # CosineAnnealingLR(T_max 12) stepped before each epoch: epoch e (from 1) trains at 0.05 (1 + cos(pi e / 12)) / 2.
    expected_lr = [0.025 * (1 + math.cos(math.pi * e / 12)) for e in (1, 2, 3)]
    assert [row["lr"] for row in history] == pytest.approx(expected_lr)
    val = [row["val_per_image_AP"] for row in history]
    assert whole["metrics"]["best_epoch"] == 1 + int(np.argmax(val))
    assert whole["metrics"]["val_per_image_AP_at_best"] == max(val)
    assert whole["protocol_name"] == "clsa" and whole["split_sizes"] == {"train": 20, "val": 20, "test": 40}
    assert 0 < whole["metrics"]["voc07_per_image_AP"] <= 100 and 0 < whole["metrics"]["voc07_mAP"] <= 100
    saved = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert saved["metrics"] == whole["metrics"]
    # The test metric is of the chosen epoch's model (fc and BN statistics), saved in the checkpoint.
    state = torch.load(tmp_path / "whole" / "checkpoint.pth", weights_only=True)
    assert state["best"]["epoch"] == whole["metrics"]["best_epoch"]
    assert "layer1.0.bn1.running_mean" in state["best"]["model"]
    assert "layer1.0.conv1.weight" not in state["best"]["model"]

    run_protocol(r18_weights, synthetic_root, tmp_path / "resumed", "--epochs", "2")
    checkpoint = tmp_path / "resumed" / "checkpoint.pth"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "epochs": 3}, checkpoint)  # as if a 3-epoch run had stopped after its second epoch
    resumed = run_protocol(r18_weights, synthetic_root, tmp_path / "resumed", "--epochs", "3")
    assert resumed["history"] == history and resumed["metrics"] == whole["metrics"]

    with pytest.raises(RecordMismatchError, match="--lr 0.05 -> 0.1"):
        run_protocol(r18_weights, synthetic_root, tmp_path / "resumed", "--epochs", "3", "--lr", "0.1")


def test_several_cpu_processes_are_refused_before_any_work(r18_weights, synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        run_protocol(r18_weights, synthetic_root, tmp_path, "--num-gpus", "2")
    with pytest.raises(ConfigError, match="--batch-size 15 is the total over 2 processes"):
        run_protocol(r18_weights, synthetic_root, tmp_path, "--batch-size", "15", "--num-gpus", "2")
    assert not list(tmp_path.iterdir())


def _predict_in_process_group(rank, world, port, weights, root, out):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model, _ = build_model(load_backbone(weights), 20)
    dataset = clsa_voc.VocImages(*read_split(root / "VOC2007", "test"), clsa_voc.build_transforms(64, 72)["test"])
    logits = clsa_voc.predict(model, dataset, torch.device("cpu"), 8, 0, show=False)
    if rank == 0:
        torch.save(logits, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes that import torch: ~30 s on 2 busy cores
def test_two_processes_score_disjoint_slices_and_gather_every_image_in_order(r18_weights, synthetic_root, tmp_path):
    args = (2, 29531, r18_weights, synthetic_root, tmp_path / "two.pt")
    torch.multiprocessing.spawn(_predict_in_process_group, args, nprocs=2)
    _predict_in_process_group(0, 1, 29532, r18_weights, synthetic_root, tmp_path / "one.pt")
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert one.shape == (40, 20) and torch.allclose(two, one, atol=1e-5)


def test_a_resize_below_the_crop_is_refused_rather_than_padded(r18_weights, synthetic_root, tmp_path):
    with pytest.raises(ConfigError, match="--resize 60 is smaller than --crop-size 64"):
        run_protocol(r18_weights, synthetic_root, tmp_path, "--resize", "60")


def test_predict_averages_the_logits_of_the_crops_of_each_image():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 20))
    images = torch.randn(7, 5, 3, 4, 4)  # 7 images of 5 crops
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(7, 20))
    logits = clsa_voc.predict(model, dataset, torch.device("cpu"), batch_size=3, workers=0, show=False)
    with torch.no_grad():
        expected = torch.stack([model(crops).mean(0) for crops in images])
    assert torch.allclose(logits, expected, atol=1e-6)
    # The reference's scores are the sigmoid of those averaged logits, not the average of sigmoids.
    assert np.allclose(clsa_voc.sigmoid_scores(logits), torch.sigmoid(expected).numpy())
