"""Times the VOC07 SVM cost sweep: a straightforward loop against transfer/svm.py, same run, same features.

    python benchmarks/svm_speed.py [--classes 20] [--jobs -1]

Features are synthetic but shaped like real ones: VOC07 sizes (5011 trainval, 4952 test, 2048-d,
20 classes at VOC-like frequencies), each the average over 49 "positions" of ReLU(noise + image
nuisance + class signals), L2-normalised: dense, non-negative and strongly correlated (mean cosine ~0.8), as
global-average-pooled res5 features are, which is what makes large costs slow to converge.

The baseline is the usual per-class, per-cost loop (VISSL's): cross_val_score(cv=3, average
precision) and then a fit on all of trainval at every cost, on the float32 features as cached. Both
sides use the same LinearSVC settings, so the benchmark asserts the same CV table, the same chosen
costs and the same test mAP (bit for bit), then prints the times.
"""

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score

from transfer import svm
from transfer.metrics import per_class_voc_ap

# Share of VOC07 trainval images holding each class (person ~40%, most others 3-10%).
CLASS_FREQUENCY = (
    0.05,
    0.05,
    0.07,
    0.04,
    0.05,
    0.04,
    0.15,
    0.07,
    0.09,
    0.03,
    0.04,
    0.08,
    0.06,
    0.05,
    0.40,
    0.05,
    0.02,
    0.05,
    0.05,
    0.05,
)


def synthetic_features(n, rng, protos, offset):
    labels = np.where(rng.random((n, len(CLASS_FREQUENCY))) < CLASS_FREQUENCY, 1, -1).astype(np.int8)
    # An image-level nuisance shared by all positions keeps the classes from being trivially separable.
    nuisance = rng.normal(0, 0.3, (n, protos.shape[1])).astype(np.float32)
    signal = (labels == 1).astype(np.float32) @ protos + offset + nuisance
    features = np.zeros((n, protos.shape[1]), np.float32)
    for _ in range(49):
        features += np.maximum(0, signal + rng.normal(0, 1, features.shape).astype(np.float32))
    return svm_features(features), labels


def svm_features(features):
    return (features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-5)).astype(np.float32)


def straightforward(train_x, targets, test_x, test_labels, costs):
    cv_ap, models = np.zeros((targets.shape[1], len(costs))), []
    for c in range(targets.shape[1]):
        per_cost = []
        for k, cost in enumerate(costs):
            cv_ap[c, k] = cross_val_score(
                svm.make_svm(cost), train_x, targets[:, c], cv=svm.FOLDS, scoring="average_precision"
            ).mean()
            per_cost.append(svm.make_svm(cost).fit(train_x, targets[:, c]))
        models.append(per_cost[int(cv_ap[c].argmax())])
    scores = svm.decision_scores(models, test_x)
    return cv_ap, 100 * per_class_voc_ap(scores, test_labels[:, : targets.shape[1]]).mean()


def ours(train_x, targets, test_x, test_labels, costs, jobs):
    cv_ap, _ = svm.cross_validate_costs(train_x, targets, costs, jobs)
    models = svm.fit_per_class(train_x, targets, [costs[i] for i in cv_ap.argmax(1)], jobs)
    scores = svm.decision_scores(models, test_x)
    return cv_ap, 100 * per_class_voc_ap(scores, test_labels[:, : targets.shape[1]]).mean()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", type=int, default=20, help="sweep only the first N classes (quick look)")
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)  # the baseline's fits warn; ours count them
    rng = np.random.default_rng(args.seed)
    protos = rng.normal(0, 0.03, (len(CLASS_FREQUENCY), 2048)).astype(np.float32)
    offset = rng.normal(-0.5, 0.5, 2048).astype(np.float32)
    train_x, train_labels = synthetic_features(5011, rng, protos, offset)
    test_x, test_labels = synthetic_features(4952, rng, protos, offset)
    targets = svm.training_targets(train_labels)[:, : args.classes]
    costs = list(svm.COSTS)
    print(
        f"features {train_x.shape} / {test_x.shape}, {targets.shape[1]} classes x {len(costs)} costs x "
        f"{svm.FOLDS} folds"
    )

    timings = {}
    for name, run in (
        ("straightforward", lambda: straightforward(train_x, targets, test_x, test_labels, costs)),
        ("ours", lambda: ours(train_x, targets, test_x, test_labels, costs, args.jobs)),
    ):
        start = time.perf_counter()
        result = run()
        timings[name] = (time.perf_counter() - start, *result)
        print(f"{name:16s} {timings[name][0]:8.1f} s   mAP {result[1]:.4f}")
    (t_ref, cv_ref, map_ref), (t_ours, cv_ours, map_ours) = timings["straightforward"], timings["ours"]
    assert np.array_equal(cv_ref, cv_ours), "CV average precision differs"
    assert np.array_equal(cv_ref.argmax(1), cv_ours.argmax(1)), "chosen costs differ"
    assert map_ref == map_ours, (map_ref, map_ours)
    chosen = [costs[i] for i in cv_ours.argmax(1)]
    print(
        f"identical CV table, chosen costs {chosen} and mAP; speed-up {t_ref / t_ours:.2f}x "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
