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
transfer/features.py.
"""

import time

from common.cli import at_least, exit_on_user_error, joblib_jobs, positive
from common.datasets import VOC2007_SPLITS
from common.io import fingerprint_files
from transfer import cli, svm
from transfer.features import LAYERS, l2_normalise
from transfer.metrics import per_class_voc_ap
from transfer.voc import VOC_CLASSES, DatasetError


def get_parser():
    p = cli.parser(__doc__, "output/voc07_svm")
    p.add_argument("--data-root", help="VOC2007 folder (default: $DETECTRON2_DATASETS/VOC2007)")
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
    p.add_argument("--batch-size", type=at_least(1), default=64, help="feature extraction batch")
    p.add_argument("--workers", type=at_least(0), default=2, help="data-loading workers for extraction")
    return p


def main(args):
    start = time.perf_counter()
    weights, root, splits, raw = cli.load_voc07(args, args.layer, batch_size=args.batch_size)
    features = {name: l2_normalise(f) for name, f in raw.items()}
    train_labels, test_labels = splits["trainval"][1], splits["test"][1]
    for name, labels, need in (("trainval", train_labels, svm.FOLDS), ("test", test_labels, 1)):
        counts = (labels == 1).sum(0)
        if counts.min() < need:
            raise DatasetError(
                f"{root}: class {VOC_CLASSES[counts.argmin()]} has {counts.min()} positive "
                f"images in {name}; the protocol needs at least {need}"
            )

    sweep_start = time.perf_counter()
    targets = svm.training_targets(train_labels)
    costs = sorted(args.costs)  # ascending, so that a tie in CV AP picks the smaller cost
    cv_ap, unconverged = svm.cross_validate_costs(features["trainval"], targets, costs, args.jobs, progress=True)
    best = [costs[i] for i in cv_ap.argmax(1)]
    svms = svm.fit_per_class(features["trainval"], targets, best, n_jobs=args.jobs)
    ap = 100 * per_class_voc_ap(svm.decision_scores(svms, features["test"]), test_labels)
    sweep_seconds = time.perf_counter() - sweep_start

    print(
        f"VOC07 SVM ({args.layer}, {features['trainval'].shape[1]}-d): mAP {ap.mean():.2f} "
        f"over {len(VOC_CLASSES)} classes; cost sweep + refit {sweep_seconds:.1f} s; "
        f"{unconverged} of {cv_ap.size * svm.FOLDS} CV fits stopped at max_iter 2000"
    )
    for name, value, cost in zip(VOC_CLASSES, ap, best):
        print(f"  {name:12s} AP {value:6.2f}  cost {cost:g}")
    results = {
        "task": "voc07_svm",
        "metrics": {"voc07_svm_mAP": float(ap.mean())},
        "per_class_AP": dict(zip(VOC_CLASSES, map(float, ap))),
        "chosen_cost": dict(zip(VOC_CLASSES, best)),
        "cv_ap": {"costs": costs, "fits_at_max_iter": unconverged, "per_class": dict(zip(VOC_CLASSES, cv_ap.tolist()))},
        "protocol": cli.protocol(__doc__, f"--layer {args.layer}, {len(costs)} costs"),
        "feature_layer": args.layer,
        "feature_dim": int(features["trainval"].shape[1]),
        "weights": weights,
        "data_root": str(root),
        "data": fingerprint_files(root, VOC2007_SPLITS),
        "split_sizes": {"trainval": len(train_labels), "test": len(test_labels)},
        "wall_time_s": {"svm": sweep_seconds},
    }
    if args.low_shot:
        low_start = time.perf_counter()
        shots = svm.low_shot(
            features["trainval"], train_labels, features["test"], test_labels, best, seed=args.seed, n_jobs=args.jobs
        )
        for k, row in shots.items():
            capped = f" (capped at {row['k_used']}: the rarest class has no more)" if row["k_used"] < k else ""
            print(f"  low-shot k={k:3d}: mAP {row['mean']:.2f} ± {row['std']:.2f}{capped}")
        results["low_shot"] = {
            "seed": args.seed,
            "per_k": {str(k): row for k, row in shots.items()},
        }
        results["wall_time_s"]["low_shot"] = time.perf_counter() - low_start
    results["wall_time_s"]["total"] = time.perf_counter() - start
    cli.write_results(args.output_dir, results)
    return results


if __name__ == "__main__":
    exit_on_user_error(main, get_parser().parse_args())
