import numpy as np
import pytest
from sklearn.model_selection import cross_val_score

from transfer import svm
from transfer.metrics import per_class_voc_ap


def separable(n, rng, classes=3):
    labels = np.where(rng.random((n, classes)) < 0.3, 1, -1)
    labels[:classes, :] = np.where(np.eye(classes), 1, -1)  # every class has positives
    features = np.abs(rng.normal(0, 0.05, (n, classes + 5)))
    features[:, :classes] += 2.0 * (labels == 1)
    return features, labels


def test_svm_on_separable_features_reaches_map_100():
    rng = np.random.default_rng(0)
    train_x, train_labels = separable(120, rng)
    test_x, test_labels = separable(80, rng)
    targets = svm.training_targets(train_labels)
    costs = [2.0**-10, 1.0, 100.0]
    cv_ap, _ = svm.cross_validate_costs(train_x, targets, costs, n_jobs=1)
    models = svm.fit_per_class(train_x, targets, [costs[i] for i in cv_ap.argmax(1)], n_jobs=1)
    assert 100 * per_class_voc_ap(svm.decision_scores(models, test_x), test_labels).mean() == pytest.approx(100)


def test_cv_table_matches_sklearn_cross_val_score():
    rng = np.random.default_rng(1)
    x, labels = separable(90, rng, classes=2)
    x += rng.normal(0, 0.8, x.shape)  # overlap, so the costs score differently
    targets = svm.training_targets(labels)
    costs = [2.0**-12, 0.1, 10.0]
    table, _ = svm.cross_validate_costs(x, targets, costs, n_jobs=2)
    expected = [
        [
            cross_val_score(svm.make_svm(cost), x, targets[:, c], cv=3, scoring="average_precision").mean()
            for cost in costs
        ]
        for c in range(2)
    ]
    np.testing.assert_array_equal(table, expected)


def test_cost_selection_prefers_large_cost_when_outliers_mislead_a_tiny_one():
    # Positives and inlier negatives differ along feature 0; feature 1 is noise, except for a few
    # far negative outliers. A tiny cost makes w ~ sum_i C_i y_i x_i, which the outliers drag onto
    # feature 1 (noise ranks the images); a large cost yields the max-margin direction along feature 0.
    rng = np.random.default_rng(2)
    n = 150
    y = np.where(np.arange(n) % 3 == 0, 1, -1)
    x = np.stack([np.where(y == 1, 1.0, 0.0) + rng.normal(0, 0.1, n), rng.normal(0, 1.0, n)], 1)
    outliers = np.flatnonzero(y == -1)[::10]
    x[outliers, 1] = -60.0
    costs = [2.0**-19, 1000.0]
    table, _ = svm.cross_validate_costs(x, y[:, None], costs, n_jobs=1)
    assert table[0, 1] > table[0, 0] + 0.1
    assert costs[int(table.argmax(1)[0])] == 1000.0


def test_a_tie_in_cv_ap_picks_the_smallest_cost():
    rng = np.random.default_rng(3)
    x, labels = separable(60, rng, classes=1)
    table, _ = svm.cross_validate_costs(x, svm.training_targets(labels), svm.COSTS, n_jobs=1)
    assert np.all(table == 1.0)
    assert svm.COSTS[int(table.argmax(1)[0])] == min(svm.COSTS) == 2.0**-19


def test_difficult_trains_as_negative():
    assert svm.training_targets(np.array([[1, 0, -1]])).tolist() == [[1, -1, -1]]


def test_low_shot_sampling_is_reproducible_by_seed():
    rng = np.random.default_rng(4)
    labels = np.where(rng.random((200, 5)) < 0.2, 1, rng.choice([-1, 0], (200, 5), p=[0.9, 0.1]))
    a = svm.sample_low_shot(labels, 4, seed=7, sample=2)
    assert np.array_equal(a, svm.sample_low_shot(labels, 4, seed=7, sample=2))
    assert not np.array_equal(a, svm.sample_low_shot(labels, 4, seed=8, sample=2))
    assert not np.array_equal(a, svm.sample_low_shot(labels, 4, seed=7, sample=3))
    # k positives per class, every non-positive image kept.
    assert ((labels == 1) & a).sum(0).tolist() == [4] * 5
    assert np.all(a[labels != 1])


def test_low_shot_caps_k_at_the_positives_a_class_has():
    labels = -np.ones((30, 2), int)
    labels[:2, 0] = 1
    labels[:10, 1] = 1
    mask = svm.sample_low_shot(labels, 8, seed=0, sample=0)
    assert ((labels == 1) & mask).sum(0).tolist() == [2, 8]
