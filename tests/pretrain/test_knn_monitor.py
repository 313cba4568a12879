"""The kNN monitor in `python pretrain/main.py`: its figures, its schedule, and weights left unchanged."""

import json

import pytest
import torch

from common.errors import DatasetError
from pretrain.builder import build_encoder
from pretrain.config import get_cfg
from pretrain.knn_monitor import KnnMonitor, first_per_class
from pretrain.main import main, parse_args, setup


def monitor_overrides(root, *extra):
    return ("KNN.ROOT", str(root), "KNN.TRAIN_PER_CLASS", "4", "KNN.VAL_PER_CLASS", "2", "KNN.CROP_SIZE", "32", *extra)


@pytest.mark.slow
def test_the_monitor_changes_no_weight_no_buffer_and_no_random_state(synthetic_root, tiny_pretrain, tmp_path):
    root = synthetic_root / "imagenet"
    run = ("SOLVER.MAX_ITER", "3")
    main(parse_args(tiny_pretrain.args(root / "train", tmp_path / "plain", *run)))
    main(
        parse_args(
            tiny_pretrain.args(
                root / "train", tmp_path / "monitored", *run, *monitor_overrides(root, "KNN.PERIOD_ITERS", "2")
            )
        )
    )
    plain, monitored = tiny_pretrain.final_state(tmp_path / "plain"), tiny_pretrain.final_state(tmp_path / "monitored")
    for key, value in plain["model"].items():  # BN running statistics included
        assert torch.equal(value, monitored["model"][key]), key
    assert torch.equal(plain["rng"]["torch"], monitored["rng"]["torch"])

    lines = [json.loads(line) for line in (tmp_path / "monitored" / "metrics.json").read_text().splitlines()]
    knn = [line for line in lines if "knn/top1_k10" in line]
    assert [line["iteration"] for line in knn] == [-1, 1, 2]  # before the first step, every 2, the last
    assert all(0 <= line["knn/top1_k10"] <= line["knn/top5_k10"] <= 100 and line["knn/seconds"] > 0 for line in knn)
    assert "knn/top1_k100" not in knn[0], "k = 100 exceeds the 40-image bank"
    log = (tmp_path / "monitored" / "log.txt").read_text()
    assert "kNN at iteration 2: top1_k10" in log and "% of the run" in log

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "monitored")).Reload()
    assert [e.step for e in events.Scalars("knn/top1_k10")] == [-1, 1, 2]
    assert [e.value for e in events.Scalars("knn/top1_k10")] == pytest.approx([line["knn/top1_k10"] for line in knn])


def test_period_in_epochs_or_iterations_and_always_the_last():
    cfg = get_cfg()
    cfg.KNN.PERIOD_EPOCHS = 2
    monitor = KnnMonitor.__new__(KnnMonitor)
    monitor.cfg, monitor.iters_per_epoch = cfg.KNN, 5
    assert [i for i in range(25) if monitor.due(i, last=i == 24)] == [9, 19, 24]
    cfg.KNN.PERIOD_ITERS = 3
    assert [i for i in range(10) if monitor.due(i, last=i == 9)] == [2, 5, 8, 9]


def test_evaluation_keeps_the_mode_and_the_global_random_stream(synthetic_root):
    cfg = get_cfg()
    cfg.merge_from_list(monitor_overrides(synthetic_root / "imagenet", "DATA.NUM_WORKERS", "1"))
    monitor = KnnMonitor(cfg, torch.device("cpu"), iters_per_epoch=10, amp=False)
    assert len(monitor.train_set) == 40 and len(monitor.val_set) == 20
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", 16, 32)
    state = torch.get_rng_state()
    metrics = monitor.evaluate(encoder, 0, writer=None)
    assert encoder.training and torch.equal(torch.get_rng_state(), state)
    assert set(metrics) == {"knn/top1_k10", "knn/top5_k10", "knn/top1_k20", "knn/top5_k20"}


def test_first_per_class_keeps_the_first_images_of_each_class(synthetic_root):
    import torchvision

    folder = torchvision.datasets.ImageFolder(synthetic_root / "imagenet" / "val")  # 4 per class
    subset = first_per_class(folder, 3)
    assert list(subset.indices) == [c * 4 + i for c in range(10) for i in range(3)]
    assert first_per_class(folder, 0) is folder


def test_an_unusable_knn_root_is_a_config_error_before_training(synthetic_root, tiny_pretrain, tmp_path):
    with pytest.raises(DatasetError, match=r"^KNN.ROOT: .*nowhere.*val"):
        setup(
            parse_args(
                tiny_pretrain.args(
                    synthetic_root / "imagenet" / "train", tmp_path, "KNN.ROOT", str(tmp_path / "nowhere")
                )
            ),
            1,
        )
