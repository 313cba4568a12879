"""The fits of the VOC07 linear-SVM protocol (described in transfer/voc07_svm.py).

They give the same models as the usual loop (per class, per cost: cross_val_score, then a fit on all
of trainval, as VISSL does), with less work: every (class, cost, fold) fit is one independent joblib
task, longest first, over features converted to float64 once and memory-mapped to the workers; and
only the chosen cost is refit on all of trainval (1 refit per class instead of one per cost).
LinearSVC has no warm start, so successive costs cannot reuse each other's solution. That bounds
the gain at (27 x 4) / (27 x 3 + 1) = 1.32x times the cores used; benchmarks/svm_speed.py measures
it (benchmarks.md).
"""

import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from common.progress import progress_bar
from transfer.metrics import per_class_voc_ap

# VISSL's list plus the 2^-4 .. 2^-19 that Goyal et al. append; sorted so that ties pick the smaller cost.
COSTS = tuple(
    sorted((0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0) + tuple(2.0**-k for k in range(4, 20)))
)
FOLDS = 3
LOW_SHOT_KS = (1, 2, 4, 8, 16, 32, 64, 96)
LOW_SHOT_SAMPLES = 5


def make_svm(cost):
    # random_state fixes liblinear's coordinate order, so a fit is reproducible in any process.
    return LinearSVC(
        C=cost,
        class_weight={1: 2, -1: 1},
        loss="squared_hinge",
        penalty="l2",
        dual=True,
        tol=1e-4,
        max_iter=2000,
        random_state=0,
    )


def training_targets(labels):
    """±1 targets of a (images x classes) VOC label array: difficult (0) counts as negative."""
    return np.where(labels == 1, 1, -1)


def cv_folds(targets):
    """The folds of sklearn's cross_val_score(cv=3) for a classifier: StratifiedKFold, no shuffle."""
    return list(StratifiedKFold(FOLDS).split(np.zeros(len(targets)), targets))


def fit_svm(features, targets, cost):
    """(fitted SVM, whether liblinear converged within max_iter); the protocol's max_iter 2000 often
    stops large costs early, so this is counted and reported instead of warned once per fit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm = make_svm(cost).fit(features, targets)
    return svm, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _fold_ap(features, targets, cost, train, held_out):
    svm, converged = fit_svm(features[train], targets[train], cost)
    # sklearn's "average_precision" scorer, as cross_val_score uses in the reference protocol.
    return average_precision_score(targets[held_out], svm.decision_function(features[held_out])), converged


def cross_validate_costs(features, targets, costs=COSTS, n_jobs=-1, progress=False):
    """(mean 3-fold CV AP of shape classes x costs, fits that hit max_iter) for ±1 targets (images x classes)."""
    features = np.ascontiguousarray(features, np.float64)
    folds = [cv_folds(targets[:, c]) for c in range(targets.shape[1])]
    tasks = [(c, k, f) for k in range(len(costs)) for c in range(targets.shape[1]) for f in range(FOLDS)]
    # Larger costs take more dual coordinate-descent passes: start them first so the tail is short.
    tasks.sort(key=lambda t: -costs[t[1]])
    aps = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_fold_ap)(features, targets[:, c], costs[k], *folds[c][f]) for c, k, f in tasks
    )
    aps = list(progress_bar(aps, progress, total=len(tasks), desc="SVM cost sweep", unit="fit"))
    table = np.zeros((targets.shape[1], len(costs), FOLDS))
    for (c, k, f), (ap, _) in zip(tasks, aps):
        table[c, k, f] = ap
    return table.mean(2), sum(not converged for _, converged in aps)


def fit_per_class(features, targets, costs, n_jobs=-1):
    """One SVM per class, class c at costs[c], fit on all rows."""
    features = np.ascontiguousarray(features, np.float64)
    fits = Parallel(n_jobs=n_jobs)(delayed(fit_svm)(features, targets[:, c], cost) for c, cost in enumerate(costs))
    return [svm for svm, _ in fits]


def decision_scores(svms, features):
    features = np.asarray(features, np.float64)
    return np.stack([svm.decision_function(features) for svm in svms], 1)


def sample_low_shot(labels, k, seed, sample):
    """Boolean (images x classes) mask of training rows for low-shot class c: k positives drawn at random
    (all of them when a class has fewer) and every non-positive image. Unsampled positives are left out
    rather than turned into negatives. The draw depends only on (seed, k, sample, class)."""
    mask = labels != 1
    for c in range(labels.shape[1]):
        positives = np.flatnonzero(labels[:, c] == 1)
        rng = np.random.default_rng([seed, k, sample, c])
        mask[rng.choice(positives, min(k, len(positives)), replace=False), c] = True
    return mask


def _fit_masked(features, targets, rows, cost):
    return fit_svm(features[rows], targets[rows], cost)[0]


def low_shot(
    train_features,
    train_labels,
    test_features,
    test_labels,
    costs,
    seed=0,
    n_jobs=-1,
    ks=LOW_SHOT_KS,
    samples=LOW_SHOT_SAMPLES,
):
    """{k: (mean mAP, std mAP, [mAP of each sample], k actually available)} over `samples` draws.

    Each class uses its cost from the full-trainval sweep (too few positives to cross-validate at k=1).
    k is capped at the smallest positive count of any class, and the cap is reported.
    """
    train_features = np.ascontiguousarray(train_features, np.float64)
    targets = training_targets(train_labels)
    fewest = int((train_labels == 1).sum(0).min())
    runs = [(k, s) for k in ks for s in range(samples)]
    masks = {run: sample_low_shot(train_labels, run[0], seed, run[1]) for run in runs}
    svms = Parallel(n_jobs=n_jobs)(
        delayed(_fit_masked)(train_features, targets[:, c], masks[run][:, c], costs[c])
        for run in runs
        for c in range(train_labels.shape[1])
    )
    classes = train_labels.shape[1]
    result = {}
    for i, (k, _sample) in enumerate(runs):
        scores = decision_scores(svms[i * classes : (i + 1) * classes], test_features)
        result.setdefault(k, []).append(100 * per_class_voc_ap(scores, test_labels).mean())
    return {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "samples": v, "k_used": min(k, fewest)}
        for k, v in result.items()
    }
