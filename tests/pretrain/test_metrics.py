import json

import pytest
from fvcore.common.config import CfgNode

from common.errors import ConfigError
from pretrain import metrics
from pretrain.metrics import MetricsWriter, progress_line, read_metrics, wandb_project


def test_progress_line_gives_eta_epoch_losses_and_throughput():
    window = {"loss": 7.5, "loss_contrastive": 6.0, "loss_ddm": 1.5, "instance_acc": 0.25, "lr": 0.03}
    window.update(img_per_s=100.0, data_time=0.01, data_time_share=0.125, skipped_images=0)
    # 50 images a step at 100 img/s: 0.5 s per iteration, 100 iterations left after iteration 19 of 120.
    line = progress_line(window, 19, 120, 10, 50, ("max_mem", 1536.4))
    assert line == (
        "eta: 0:00:50  epoch: 1/12  iter: 19/120  instance_acc: 0.25  loss: 7.5  loss_contrastive: 6  "
        "loss_ddm: 1.5  lr: 0.03  img/s: 100.0  data: 12%  max_mem: 1536M"
    )


def test_metrics_json_round_trips_with_epochs_and_reads_older_runs(tmp_path):
    # A line of an older run (its accuracy under "top1") and one cut short by a kill mid-write.
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 0, "top1": 0.5}) + '\n{"iteration": 1, "lo')
    writer = MetricsWriter(tmp_path, start_iter=1, iters_per_epoch=4)
    writer.write(5, {"loss": 2.0, "instance_acc": 0.75})
    writer.write(-1, {"knn/top1_k20": 10.0})  # the kNN of the initial weights
    writer.close()
    assert read_metrics(tmp_path / "metrics.json") == [
        {"iteration": 0, "instance_acc": 0.5},
        {"iteration": 5, "epoch": 1.5, "loss": 2.0, "instance_acc": 0.75},
        {"iteration": -1, "epoch": 0.0, "knn/top1_k20": 10.0},
    ]


def _wandb_cfg(project):
    return CfgNode({"WANDB": CfgNode({"PROJECT": project})})


def test_wandb_set_in_the_config_but_not_installed_is_refused(monkeypatch):
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    assert wandb_project(_wandb_cfg("")) is None
    with pytest.raises(ConfigError, match="pip install wandb"):
        wandb_project(_wandb_cfg("clsa"))
    monkeypatch.setenv("WANDB_PROJECT", "clsa")
    assert wandb_project(_wandb_cfg("")) is None  # the environment's default only warns


def test_wandb_mirrors_the_scalars_and_a_requeued_run_keeps_its_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "clsa-test")
    project = wandb_project(_wandb_cfg(""))
    assert project == "clsa-test"
    writer = MetricsWriter(tmp_path, 0, 4, project, {"SEED": 0})
    writer.write(3, {"loss": 2.0, "lr": 0.5})
    writer.write(3, {"knn/top1_k20": 10.0})  # the kNN after the same iteration joins its step
    writer.write(7, {"loss": 1.0})  # wandb publishes a step once the next one starts
    summary = dict(writer.wandb.summary)
    assert {key: summary[key] for key in ("_step", "loss", "lr", "knn/top1_k20")} == {
        "_step": 4,
        "loss": 2.0,
        "lr": 0.5,
        "knn/top1_k20": 10.0,
    }
    first = writer.wandb.id
    writer.close()
    assert (tmp_path / metrics.WANDB_RUN_ID).read_text() == first
    requeued = MetricsWriter(tmp_path, 4, 4, project, {"SEED": 0})
    assert requeued.wandb.id == first and requeued.wandb.config["SEED"] == 0
    requeued.close()
    assert {run.name.rsplit("-", 1)[1] for run in (tmp_path / "wandb").glob("offline-run-*")} == {first}
