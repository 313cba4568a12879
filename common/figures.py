"""The suite's figures: a pretraining run's curves (curves.png) and the transfer report's bars (report.png).

Each figure is built as a matplotlib `Figure` without pyplot (no global state, no display: the Agg
canvas renders it), so that a test reads the plotted values back from its artists; `save_png` writes it.
"""

import math

from common.io import atomic_path

# The panels of curves.png: a title and which metrics.json keys it plots.
CURVE_PANELS = (
    ("losses", lambda key: key.startswith("loss")),
    ("kNN top-1 (%)", lambda key: key.startswith("knn/top1")),
    ("instance-discrimination accuracy", lambda key: key == "instance_acc"),
    ("learning rate", lambda key: key == "lr"),
    ("images / s", lambda key: key == "img_per_s"),
    ("share of time waiting for data", lambda key: key == "data_time_share"),
)


def training_curves(rows, title=""):
    """A figure of a pretraining run's metrics.json lines (dicts, as pretrain.metrics.read_metrics gives
    them): one panel per CURVE_PANELS entry, each key a line against the epoch (against the iteration
    for runs that predate the "epoch" key)."""
    from matplotlib.figure import Figure

    x_key = "epoch" if rows and all("epoch" in row for row in rows) else "iteration"
    fig = Figure(figsize=(13, 7))
    axes = fig.subplots(2, 3).flat
    for ax, (panel, wanted) in zip(axes, CURVE_PANELS):
        keys = sorted({key for row in rows for key in row if wanted(key)})
        for key in keys:
            points = [(row[x_key], row[key]) for row in rows if key in row]
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key)
        ax.set_title(panel)
        ax.set_xlabel(x_key)
        if len(keys) > 1:
            ax.legend(fontsize=7)
        elif not keys:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _bar_label(cell):
    """What a bar of the report says: its value, or why it has none."""
    if "missing" in cell:
        return "failed" if cell["missing"].startswith("failed") else "not run"
    return f"{cell['mean']:.1f}"


def report_bars(columns, rows, title):
    """The report's bar chart: for each (label, cells) row, one bar per column, every bar labelled with its
    value. A cell is {"mean", "std"} or {"missing": reason}; a missing one has no bar and says "not run" or
    "failed" in red at the axis, and a zero is written in red, so that neither reads as a short bar."""
    from matplotlib.figure import Figure

    width = 0.8 / len(rows)
    fig = Figure(figsize=(2.4 * len(columns) + 2, 4.5))
    ax = fig.subplots()
    for i, (label, cells) in enumerate(rows):
        x = [c + i * width for c in range(len(columns))]
        values = [cell.get("mean", math.nan) for cell in cells]
        errors = [cell.get("std", 0.0) for cell in cells]
        ax.bar(x, values, width, yerr=errors, label=label, hatch="//" if "(ours)" in label else None)
        for xi, value, cell in zip(x, values, cells):
            shown = _bar_label(cell)
            absent = math.isnan(value) or value == 0
            ax.text(
                xi,
                0 if math.isnan(value) else value,
                shown,
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=7,
                color="red" if absent else "black",
            )
    ax.set_xticks([c + width * (len(rows) - 1) / 2 for c in range(len(columns))], columns)
    ax.set_ylabel("%")
    ax.set_ylim(0, 130)  # room for the labels and the legend above 100
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    return fig


def save_png(fig, path):
    """Writes `fig` to `path` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
