import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score, precision_recall_curve

from transfer.metrics import per_class_voc_ap, per_image_ap, voc_ap


def test_voc_ap_hand_case_with_tie_and_difficult():
    # Ranked: 0.9 pos | 0.8 neg, 0.8 pos (tie: one point) | 0.7 difficult (dropped) | 0.5 neg | 0.3 pos.
    # Points (recall, precision): (1/3, 1), (2/3, 2/3), (1, 3/5); envelope 1, 2/3, 3/5.
    scores = [0.9, 0.8, 0.8, 0.7, 0.5, 0.3]
    labels = [1, -1, 1, 0, -1, 1]
    assert voc_ap(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_voc_ap_envelope_lifts_a_later_higher_precision():
    # pos, neg, neg, pos, pos: precisions 1, 1/2, 3/5 at recalls 1/3, 2/3, 1 -> envelope 1, 3/5, 3/5.
    assert voc_ap([5, 4, 3, 2, 1], [1, -1, -1, 1, 1]) == pytest.approx((1 + 3 / 5 + 3 / 5) / 3)
    # sklearn's AP has no envelope: (1 + 1/2 + 3/5) / 3.
    assert average_precision_score([1, 0, 0, 1, 1], [5, 4, 3, 2, 1]) == pytest.approx((1 + 1 / 2 + 3 / 5) / 3)


def test_voc_ap_is_sklearn_ap_under_the_precision_envelope_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = np.where(rng.random(200) < 0.2, 1, -1)
        labels[0] = 1
        scores = np.round(rng.normal(size=200) + labels, 1)  # rounding makes ties
        ours = voc_ap(scores, labels)
        # sklearn groups ties the same way; the definitions differ only by the envelope, so ours is
        # sklearn's sum of recall steps with precision replaced by its running max from the right.
        precision, recall, _ = precision_recall_curve(labels == 1, scores)
        envelope = np.maximum.accumulate(precision)  # sklearn orders by decreasing recall
        expected = np.sum(-np.diff(recall) * envelope[:-1])
        assert ours == pytest.approx(expected)
        assert ours >= average_precision_score(labels == 1, scores) - 1e-12


def test_voc_ap_equals_sklearn_when_precision_is_already_monotone():
    labels = np.array([1, 1, -1, 1, -1, -1])
    scores = np.array([6, 5, 4, 3, 2, 1])
    # precisions at each new recall: 1, 1, 3/4 -- non-increasing, so the envelope changes nothing.
    assert voc_ap(scores, labels) == pytest.approx(average_precision_score(labels == 1, scores))


def test_difficult_images_are_excluded_per_class():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.9]])
    labels = np.array([[1, -1], [0, 1], [-1, 0]])
    # class 0: (0.9 pos, 0.1 neg) -> 1. class 1: the difficult image scored 0.9 is left out -> 1.
    assert per_class_voc_ap(scores, labels).tolist() == [1.0, 1.0]
    labels[2, 1] = -1  # were it a negative, it would outrank the positive: precision 1/2
    assert per_class_voc_ap(scores, labels)[1] == pytest.approx(0.5)


def test_per_image_ap_hand_case():
    scores = np.array(
        [
            [0.9, 0.5, 0.7, 0.1],  # positives 0 and 3: ranks 1 and 4 -> (1/1 + 2/4) / 2 = 0.75
            [0.2, 0.8, 0.8, 0.3],  # positive 1 tied with negative 2 -> precision 1/2 -> 0.5
            [0.6, 0.4, 0.9, 0.5],  # positive 0; class 2 only difficult, a negative ranked above it -> 0.5
            [0.1, 0.2, 0.3, 0.4],  # no positive (class 3 only difficult): AP 0, still counted
        ]
    )
    labels = np.array([[1, -1, -1, 1], [-1, 1, -1, -1], [1, -1, 0, -1], [-1, -1, -1, 0]])
    assert per_image_ap(scores, labels) == pytest.approx((0.75 + 0.5 + 0.5 + 0) / 4)


def reference_voc07_accuracy(scores, labels):
    """The CLSA reference's computation, restated: binary labels from the non-difficult objects, sklearn's
    average_precision_score per image, the sum divided by the number of images."""
    targets = labels == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "No positive class found in y_true"
        return sum(average_precision_score(t, s) for t, s in zip(targets, scores)) / len(scores)


def voc07_test_like(rng, images=4952, without_positive=14):
    """VOC07-test-like labels (1-3 positive classes, ~0.2 difficult-only classes per image, some images
    with difficult objects only) and float32 sigmoid scores with ties and saturated values."""
    labels = -np.ones((images, 20), np.int8)
    for row in labels:
        row[rng.choice(20, rng.integers(1, 4), replace=False)] = 1
    labels[(labels == -1) & (rng.random(labels.shape) < 0.2 / 18)] = 0
    labels[:without_positive] = np.where(rng.random((without_positive, 20)) < 0.1, 0, -1)
    logits = np.round(rng.normal(0, 2, labels.shape) + 4 * (labels == 1) + 2 * (labels == 0), 1)
    logits[rng.random(labels.shape) < 0.02] = 30.0  # sigmoid saturates to exactly 1 in float32
    return torch.sigmoid(torch.from_numpy(logits.astype(np.float32))).numpy(), labels


def test_per_image_ap_equals_the_reference_on_a_voc07_test_like_matrix():
    scores, labels = voc07_test_like(np.random.default_rng(0))
    assert (labels == 0).sum() / len(labels) == pytest.approx(0.2, abs=0.05)
    assert ((labels == 1).sum(1) == 0).sum() == 14
    assert abs(per_image_ap(scores, labels) - reference_voc07_accuracy(scores, labels)) < 1e-9


def test_per_image_ap_matches_sklearn_label_ranking_ap_without_difficult():
    rng = np.random.default_rng(1)
    labels = np.where(rng.random((50, 20)) < 0.15, 1, -1)
    labels[:, 0] = 1  # every image has a positive: sklearn's LRAP would score an image without one 1, not 0
    scores = np.round(rng.normal(size=(50, 20)), 1)
    assert per_image_ap(scores, labels) == pytest.approx(label_ranking_average_precision_score(labels == 1, scores))
