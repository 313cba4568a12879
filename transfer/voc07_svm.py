"""VOC07 linear-SVM transfer (Goyal et al. 2019; PIRL, SwAV, VISSL): per-class mAP on VOC2007 test.

    python transfer/voc07_svm.py --weights CKPT [--layer res5_2x2] [--low-shot]

Frozen features of VOC2007 trainval and test: each image resized to 256, then to 224x224 (no crop),
ImageNet-normalised; the global-average-pooled res5 (2048-d, the default) or, with --layer
res5_2x2, the original benchmark's AvgPool2d(6, stride 1) of res5 (8192-d); the two give different
numbers. The features are L2-normalised. One LinearSVC per class (class_weight {1: 2, -1: 1},
squared hinge, L2, dual, tol 1e-4, max_iter 2000), its cost chosen by 3-fold cross-validated AP over
0.01, 0.1, 1, 2, 5, 10, 15, 20, 50, 100, 1000 and 2^-4 .. 2^-19, then refit on all of trainval.
Difficult objects count as negatives for training and are left out per class at test. The metric is
VOC's all-point interpolated AP x 100, averaged over the 20 classes: comparable with the VOC07 SVM
mAP of PIRL, SwAV and VISSL (check their feature layer), not with CLSA Table 3's "VOC07 accuracy".
--low-shot adds k = 1, 2, 4, 8, 16, 32, 64, 96 positives per class (the other positives left out,
every other image negative), each class at its full-trainval cost, mean and std over 5 samples.

The fits are in transfer/svm.py, the metric in transfer/metrics.py (voc_ap), the features in
transfer/features.py (common/trunk.py's layers).
"""

import time

from common.cli import at_least, exit_on_user_error, joblib_jobs, positive
from common.datasets import VOC2007_SPLITS
from common.errors import DatasetError
from common.trunk import LAYERS
from transfer import cli, results, svm
from transfer.features import l2_normalise
from transfer.metrics import per_class_voc_ap
from transfer.voc import VOC_CLASSES, load_voc07, voc2007_root


def get_parser():
    p = cli.parser(__doc__, "output/voc07_svm")
    cli.add_voc2007_data(p)
    p.add_argument(
        "--layer",
        choices=sorted(LAYERS),
        default="res5",
        help="res5: 2048-d global average pool (default); res5_2x2: 8192-d AvgPool2d(6, 1)",
    )
    p.add_argument(
        "--low-shot",
        action="store_true",
        help=f"also k = {svm.LOW_SHOT_KS} positives per class, {svm.LOW_SHOT_SAMPLES} samples each",
    )
    p.add_argument(
        "--costs",
        type=positive(),
        nargs="+",
        default=svm.COSTS,
        help="override the protocol's cost list (quick runs only; results.json records it)",
    )
    p.add_argument("--seed", type=int, default=0, help="low-shot sampling seed")
    p.add_argument("--jobs", type=joblib_jobs, default=-1, help="joblib workers (-1: all cores)")
    p.add_argument("--cache-dir", help="feature cache (default: ~/.cache/clsa-suite/features)")
    p.add_argument("--batch-size", type=at_least(1), default=64, help="feature extraction batch (one process)")
    p.add_argument("--workers", type=at_least(0), default=2, help="data-loading workers for extraction")
    return p


def check_positives(root, splits):
    """DatasetError naming a class with too few positives for the cross-validation or the test AP."""
    for name, need in (("trainval", svm.FOLDS), ("test", 1)):
        counts = (splits[name][1] == 1).sum(0)
        if counts.min() < need:
            raise DatasetError(
                f"{root}: class {VOC_CLASSES[counts.argmin()]} has {counts.min()} positive "
                f"images in {name}; the protocol needs at least {need}"
            )


def sweep_costs(args, features, splits):
    """(per-class test AP x 100, chosen costs, CV AP, fits stopped at max_iter): the cost chosen per
    class by cross-validated AP, then refit on all of trainval."""
    targets = svm.training_targets(splits["trainval"][1])
    costs = sorted(args.costs)  # ascending, so that a tie in CV AP picks the smaller cost
    cv_ap, unconverged = svm.cross_validate_costs(features["trainval"], targets, costs, args.jobs, progress=True)
    best = [costs[i] for i in cv_ap.argmax(1)]
    svms = svm.fit_per_class(features["trainval"], targets, best, n_jobs=args.jobs)
    ap = 100 * per_class_voc_ap(svm.decision_scores(svms, features["test"]), splits["test"][1])
    return ap, best, cv_ap, unconverged


def low_shot(args, features, splits, best):
    shots = svm.low_shot(
        features["trainval"], splits["trainval"][1], features["test"], splits["test"][1], best,
        seed=args.seed, n_jobs=args.jobs,
    )  # fmt: skip
    for k, row in shots.items():
        capped = f" (capped at {row['k_used']}: the rarest class has no more)" if row["k_used"] < k else ""
        print(f"  low-shot k={k:3d}: mAP {row['mean']:.2f} ± {row['std']:.2f}{capped}")
    return {"seed": args.seed, "per_k": {str(k): row for k, row in shots.items()}}


def main(args):
    results.check_inputs(args.weights, voc2007_root, args.data_root)
    with results.output_folder(args.output_dir, "voc07_svm", args.weights):
        return _svm_protocol(args)


def _svm_protocol(args):
    start = time.perf_counter()
    weights, root, splits, raw = load_voc07(args, args.layer, batch_size=args.batch_size)
    features = {name: l2_normalise(f) for name, f in raw.items()}
    check_positives(root, splits)
    sweep_start = time.perf_counter()
    ap, best, cv_ap, unconverged = sweep_costs(args, features, splits)
    wall_time_s = {"svm": time.perf_counter() - sweep_start}
    print(
        f"VOC07 SVM ({args.layer}, {features['trainval'].shape[1]}-d): mAP {ap.mean():.2f} "
        f"over {len(VOC_CLASSES)} classes; cost sweep + refit {wall_time_s['svm']:.1f} s; "
        f"{unconverged} of {cv_ap.size * svm.FOLDS} CV fits stopped at max_iter 2000"
    )
    for name, value, cost in zip(VOC_CLASSES, ap, best):
        print(f"  {name:12s} AP {value:6.2f}  cost {cost:g}")
    details = {}
    if args.low_shot:
        low_start = time.perf_counter()
        details["low_shot"] = low_shot(args, features, splits, best)
        wall_time_s["low_shot"] = time.perf_counter() - low_start
    costs = sorted(args.costs)
    return results.write_results(
        args.output_dir,
        "voc07_svm",
        {"voc07_svm_mAP": float(ap.mean())},
        results.protocol(__doc__, f"--layer {args.layer}, {len(costs)} costs"),
        weights,
        root,
        VOC2007_SPLITS,
        {name: len(labels) for name, (_, labels) in splits.items()},
        start,
        wall_time_s=wall_time_s,
        per_class_AP=dict(zip(VOC_CLASSES, map(float, ap))),
        chosen_cost=dict(zip(VOC_CLASSES, best)),
        cv_ap={"costs": costs, "fits_at_max_iter": unconverged, "per_class": dict(zip(VOC_CLASSES, cv_ap.tolist()))},
        feature_layer=args.layer,
        feature_dim=int(features["trainval"].shape[1]),
        **details,
    )


def cli_main():
    """`python transfer/voc07_svm.py`, and the `clsa-voc07-svm` command of an installed package."""
    exit_on_user_error(main, get_parser().parse_args())


if __name__ == "__main__":
    cli_main()
