import math

from common.figures import report_bars, training_curves


def _panel(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_training_curves_plot_each_metric_against_the_epoch():
    rows = [
        {"iteration": -1, "epoch": 0.0, "knn/top1_k20": 10.0, "knn/top1_k200": 12.0},
        {"iteration": 1, "epoch": 0.5, "loss": 8.0, "loss_ddm": 2.0, "instance_acc": 0.1, "lr": 0.03},
        {"iteration": 3, "epoch": 1.0, "loss": 7.0, "loss_ddm": 1.5, "instance_acc": 0.2, "lr": 0.02},
        {"iteration": 3, "epoch": 1.0, "knn/top1_k20": 30.0, "knn/top1_k200": 25.0},
    ]
    for row in rows[1:3]:
        row.update(img_per_s=100.0 * row["epoch"], data_time_share=0.5 - row["epoch"] / 4)
    fig = training_curves(rows)
    assert _lines(_panel(fig, "losses")) == {"loss": ([0.5, 1.0], [8.0, 7.0]), "loss_ddm": ([0.5, 1.0], [2.0, 1.5])}
    assert _lines(_panel(fig, "kNN top-1 (%)")) == {
        "knn/top1_k20": ([0.0, 1.0], [10.0, 30.0]),
        "knn/top1_k200": ([0.0, 1.0], [12.0, 25.0]),
    }
    assert _lines(_panel(fig, "instance-discrimination accuracy")) == {"instance_acc": ([0.5, 1.0], [0.1, 0.2])}
    assert _lines(_panel(fig, "learning rate")) == {"lr": ([0.5, 1.0], [0.03, 0.02])}
    assert _lines(_panel(fig, "images / s")) == {"img_per_s": ([0.5, 1.0], [50.0, 100.0])}
    assert _lines(_panel(fig, "share of time waiting for data")) == {"data_time_share": ([0.5, 1.0], [0.375, 0.25])}
    assert {ax.get_xlabel() for ax in fig.axes} == {"epoch"}


def test_curves_of_a_run_without_epochs_are_against_the_iteration_and_say_what_was_not_logged():
    fig = training_curves([{"iteration": 19, "loss": 8.0}, {"iteration": 39, "loss": 7.0}])
    losses = _panel(fig, "losses")
    assert losses.get_xlabel() == "iteration" and _lines(losses) == {"loss": ([19, 39], [8.0, 7.0])}
    assert [text.get_text() for text in _panel(fig, "kNN top-1 (%)").texts] == ["not logged"]


def test_report_bars_label_every_value_and_mark_zero_and_missing_cells():
    rows = [
        ("CLSA (paper)", [{"mean": 93.6}, {"mean": 83.2}]),
        ("ours", [{"mean": 0.0, "std": 0.0}, {"missing": "VOC07+12 detection not run"}]),
        ("other", [{"missing": "failed: exit code 1: killed"}, {"mean": 50.0, "std": 2.0}]),
    ]
    ax = report_bars(["VOC07", "AP50"], rows, "t").axes[0]
    heights = [[bar.get_height() for bar in container] for container in ax.containers if hasattr(container, "patches")]
    assert heights[0] == [93.6, 83.2] and heights[1][0] == 0.0 and math.isnan(heights[1][1])
    labels = [(text.get_text(), text.get_position()[1], text.get_color()) for text in ax.texts]
    assert labels == [
        ("93.6", 93.6, "black"),
        ("83.2", 83.2, "black"),
        ("0.0", 0.0, "red"),
        ("not run", 0, "red"),
        ("failed", 0, "red"),
        ("50.0", 50.0, "black"),
    ]
