"""The paper's Table 3 for evaluated checkpoints, next to the paper's own rows.

    python tools/report.py SUITE_DIR [SUITE_DIR ...] [--output-dir DIR] [--pretrain-dir OUTPUT_DIR]

Each SUITE_DIR is one checkpoint's `tools/run_suite.py` output: stage folders voc07_svm/,
voc07_linear/, imagenet_linear/, imagenet_knn/, voc_det/ and coco_det/, each with a results.json
(several seeds: mean and std are shown). Writes report.md, report.json and report.png (bar chart) to --out
(default: the first SUITE_DIR) and prints the markdown. With --pretrain-dir, also curves.png: the
losses, kNN top-1, lr, img/s and data-wait share of that pretraining run against the epoch.
"""

import json
import math
from pathlib import Path

from common.cli import entry_parser, exit_on_user_error
from common.errors import UserError
from common.figures import report_bars, save_png, training_curves
from common.io import atomic_path, atomic_write_json
from common.synthetic import MARKER
from pretrain.metrics import read_metrics

# Table 3 of the paper: VOC07 accuracy, VOC07+12 AP50, COCO AP, COCO APs.
PAPER_ROWS = {
    "MoCo v2": (87.1, 82.5, 42.0, 20.8),
    "SwAV": (88.9, 82.6, 42.1, 19.7),
    "CLSA": (93.6, 83.2, 42.3, 24.4),
    "Supervised": (87.5, 81.3, 40.8, 20.1),
}

STAGE_NAMES = {
    "voc07_svm": "VOC07 SVM",
    "voc07_linear": "VOC07 linear",
    "voc07_clsa": "VOC07 reference protocol",
    "imagenet_linear": "ImageNet linear",
    "imagenet_knn": "ImageNet kNN",
    "voc_det": "VOC07+12 detection",
    "coco_det": "COCO detection",
}


# What a cell of a column fed by several stages says about where its number comes from.
PROTOCOLS = {"voc07_clsa": "reference protocol", "voc07_linear": "frozen features"}


class Column:
    """One table column: which stage's results.json and which metric inside `metrics`. `stage` may be a
    tuple: the first of those stages that has a results.json gives the cell, which then names it."""

    def __init__(self, title, stage, *path):
        self.title, self.stages, self.path = title, stage if isinstance(stage, tuple) else (stage,), path


TABLE3 = [
    # The CLSA reference code's "VOC07 accuracy": per-image AP over the 20 labels, averaged over images,
    # of the reference protocol where it ran, else of the linear layer on frozen features.
    Column("VOC07 Accuracy", ("voc07_clsa", "voc07_linear"), "voc07_per_image_AP"),
    Column("VOC07+12 AP50", "voc_det", "bbox", "AP50"),
    Column("COCO AP", "coco_det", "bbox", "AP"),
    Column("COCO APS", "coco_det", "bbox", "APs"),
]
EXTENDED = [
    Column("VOC07 linear per-class mAP", "voc07_linear", "voc07_mAP"),
    Column("VOC07 linear per-image AP", "voc07_linear", "voc07_per_image_AP"),
    Column("VOC07 SVM mAP", "voc07_svm", "voc07_svm_mAP"),
    Column("ImageNet top-1 (best)", "imagenet_linear", "top1_best"),
    Column("ImageNet kNN top-1 (k=20)", "imagenet_knn", "top1_k20"),
    Column("VOC07+12 AP", "voc_det", "bbox", "AP"),
    Column("VOC07+12 AP75", "voc_det", "bbox", "AP75"),
    Column("COCO AP50", "coco_det", "bbox", "AP50"),
    Column("COCO AP75", "coco_det", "bbox", "AP75"),
    Column("COCO APM", "coco_det", "bbox", "APm"),
    Column("COCO APL", "coco_det", "bbox", "APl"),
    Column("COCO mask AP", "coco_det", "segm", "AP"),
]


def _lookup(metrics, path):
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _read_results(path):
    """A stage's results.json; a file cut short or not a JSON object is refused, naming it."""
    try:
        results = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); rerun that stage, or remove its folder") from None
    if not isinstance(results, dict):
        raise UserError(f"{path} holds a {type(results).__name__}, not a stage's results; rerun that stage")
    return results


def check_is_suite(suite_dir):
    """Refuses a folder in which no stage of tools/run_suite.py has run (nor failed)."""
    if not any((Path(suite_dir) / stage).is_dir() for stage in STAGE_NAMES):
        raise UserError(
            f"{suite_dir} holds no stage folder ({', '.join(STAGE_NAMES)}); pass a tools/run_suite.py output folder"
        )


def cell(suite_dir, column):
    """{"mean", "std", "n"} of a column for one checkpoint, or {"missing": reason}.

    A stage that ran several seeds (train_net.py --seeds) aggregated them itself: its results.json
    carries the mean in `metrics` and the std in `metrics_std`.
    """
    stage = next((s for s in column.stages if (Path(suite_dir) / s / "results.json").is_file()), column.stages[0])
    stage_dir = Path(suite_dir) / stage
    path = stage_dir / "results.json"
    if not path.is_file():
        failed = stage_dir / "FAILED"
        reason = f"failed: {failed.read_text().strip()[:80]}" if failed.is_file() else f"{STAGE_NAMES[stage]} not run"
        return {"missing": reason}
    results = _read_results(path)
    value = _lookup(results.get("metrics", {}), column.path)
    if value is None:
        return {"missing": f"{STAGE_NAMES[stage]} has no {'.'.join(column.path)}"}
    if not math.isfinite(value):
        return {"missing": f"{STAGE_NAMES[stage]} gave a non-finite {'.'.join(column.path)}"}
    std = _lookup(results.get("metrics_std", {}), column.path)
    found = {"mean": float(value), "std": float(std or 0.0), "n": len(results.get("seeds", [])) or 1}
    if abs(value) < 0.05 and results.get("iterations"):
        # A detector that found (almost) nothing: say after how short a schedule, so a cell that reads
        # 0.0 at one decimal does not look like a broken stage.
        found["iterations"] = int(results["iterations"])
    return {**found, "protocol": PROTOCOLS[stage]} if len(column.stages) > 1 else found


def _uses_synthetic_data(suite_dir):
    roots = set()
    for path in Path(suite_dir).glob("*/results.json"):
        root = _read_results(path).get("data_root")
        if root:
            roots.add(Path(root))
    return any((r / MARKER).is_file() or any(r.glob(f"*/{MARKER}")) for r in roots)


def _format(c):
    if "missing" in c:
        return f"— ({c['missing']})"
    if "iterations" in c and c["mean"] != 0:
        # Two significant digits, so a detector that found a little does not print as a bare 0.0.
        number = f"{c['mean']:.2g} ± {c['std']:.2g}" if c["n"] > 1 else f"{c['mean']:.2g}"
        return f"{number} (almost nothing detected after {c['iterations']} iterations)"
    number = f"{c['mean']:.1f} ± {c['std']:.1f}" if c["n"] > 1 else f"{c['mean']:.1f}"
    if "iterations" in c:
        return f"{number} (nothing detected after {c['iterations']} iterations)"
    return f"{number} ({c['protocol']})" if "protocol" in c else number


def _markdown(title, columns, rows):
    lines = [
        f"### {title}",
        "",
        "| Measurement | " + " | ".join(c.title for c in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(lines)


def build_report(suite_dirs):
    ours = {
        Path(d).name: {
            "table3": [cell(d, c) for c in TABLE3],
            "extended": [cell(d, c) for c in EXTENDED],
            "synthetic_data": _uses_synthetic_data(d),
        }
        for d in suite_dirs
    }
    table3_rows = [(f"{name} (paper)", [f"{v:.1f}" for v in values]) for name, values in PAPER_ROWS.items()]
    table3_rows += [(f"{name} (ours)", [_format(c) for c in row["table3"]]) for name, row in ours.items()]
    extended_rows = [(f"{name} (ours)", [_format(c) for c in row["extended"]]) for name, row in ours.items()]
    notes = [
        "VOC07 Accuracy is the CLSA reference code's metric: the average precision of the 20 labels of each "
        "test image, averaged over all test images (voc07_per_image_AP). Each of our cells names the protocol "
        "that produced it: 'reference protocol' is the CLSA reference code's (transfer/voc07_linear.py "
        "--protocol clsa: fc trained on VOC07 train with the backbone's BN statistics adapting, the epoch "
        "chosen on val, 5-crop test), the one behind the paper's CLSA row (93.6); 'frozen features' is the "
        "linear layer on fixed features trained on trainval, shown when the reference protocol did not run. "
        "The paper's MoCo v2, SwAV and Supervised rows in that column are per-class mAPs, comparable with the "
        "extended table's per-class mAP and VOC07 SVM mAP (PIRL/SwAV/VISSL's protocol), not with this metric.",
        "VOC07+12 AP50: Faster R-CNN R50-C4, VOC07 11-point AP at IoU 0.5. COCO AP/APS: Mask R-CNN R50-C4 "
        "box AP (COCOeval). Mean ± std where several seeds ran.",
    ]
    synthetic = [name for name, row in ours.items() if row["synthetic_data"]]
    if synthetic:
        notes.insert(
            0,
            f"SMOKE-SCALE: {', '.join(synthetic)} ran on the built-in synthetic data sets with tiny "
            "schedules. These numbers test the pipeline; they are not paper reproductions.",
        )
    markdown = (
        "\n\n".join(
            [
                "## Transfer results (the paper's Table 3)",
                _markdown("Table 3", TABLE3, table3_rows),
                _markdown("Extended", EXTENDED, extended_rows),
                "\n".join(f"- {n}" for n in notes),
            ]
        )
        + "\n"
    )
    data = {
        "columns": [c.title for c in TABLE3],
        "paper": {k: list(v) for k, v in PAPER_ROWS.items()},
        "ours": {
            name: {
                "table3": dict(zip([c.title for c in TABLE3], row["table3"])),
                "extended": dict(zip([c.title for c in EXTENDED], row["extended"])),
                "synthetic_data": row["synthetic_data"],
            }
            for name, row in ours.items()
        },
        "notes": notes,
    }
    return markdown, data


def figure(data):
    """report.png's figure of `data` (build_report's): the paper's Table 3 rows and ours, bar by bar."""
    rows = [(f"{k} (paper)", [{"mean": v} for v in values]) for k, values in data["paper"].items()]
    rows += [(f"{name} (ours)", [row["table3"][c] for c in data["columns"]]) for name, row in data["ours"].items()]
    synthetic = any(r["synthetic_data"] for r in data["ours"].values())
    title = "Transfer results against the CLSA paper's Table 3" + (" (ours: synthetic smoke test)" if synthetic else "")
    return report_bars(data["columns"], rows, title)


def curves(pretrain_dir):
    """curves.png's figure of the pretraining run in `pretrain_dir`, or None when it has no metrics.json
    (a checkpoint copied without its run folder)."""
    path = Path(pretrain_dir) / "metrics.json"
    if not path.is_file():
        return None
    return training_curves(read_metrics(path), title=f"pretraining {Path(pretrain_dir).resolve().name}")


def main(argv=None):
    parser = entry_parser(__doc__)
    parser.add_argument("suite_dirs", nargs="+", type=Path, help="run_suite.py output folders, one per checkpoint")
    parser.add_argument(
        "--output-dir",
        "--out",
        dest="out",
        type=Path,
        help="where report.md/.json/.png go (default: the first suite dir)",
    )
    parser.add_argument(
        "--pretrain-dir", type=Path, help="the checkpoints' pretraining OUTPUT_DIR: also write curves.png from it"
    )
    args = parser.parse_args(argv)
    for d in args.suite_dirs:
        if not d.is_dir():
            parser.error(f"{d} is not a folder; pass run_suite.py output folders")
        check_is_suite(d)
    if args.pretrain_dir and not args.pretrain_dir.is_dir():
        parser.error(f"--pretrain-dir {args.pretrain_dir} is not a folder; pass a pretraining OUTPUT_DIR")
    out = args.out or args.suite_dirs[0]
    markdown, data = build_report(args.suite_dirs)
    training = curves(args.pretrain_dir) if args.pretrain_dir else None
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown)
    atomic_write_json(data, out / "report.json")
    save_png(figure(data), out / "report.png")
    written = [out / "report.md", out / "report.json", out / "report.png"]
    if training:
        save_png(training, out / "curves.png")
        written.append(out / "curves.png")
    print(markdown)
    if args.pretrain_dir and not training:
        print(f"no curves.png: {args.pretrain_dir} has no metrics.json")
    print(f"wrote {', '.join(map(str, written))}")


def cli_main():
    """`python tools/report.py`, and the `clsa-report` command of an installed package."""
    exit_on_user_error(main)


if __name__ == "__main__":
    cli_main()
