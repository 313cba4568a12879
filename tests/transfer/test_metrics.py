import numpy as np
import pytest
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
    scores = np.array([
        [0.9, 0.5, 0.7, 0.1],   # positives 0 and 3: ranks 1 and 4 -> (1/1 + 2/4) / 2 = 0.75
        [0.2, 0.8, 0.8, 0.3],   # positive 1 tied with negative 2 -> precision 1/2 -> 0.5
        [0.6, 0.4, 0.9, 0.5],   # positive 0, class 2 difficult (left out): rank 1 -> 1.0
        [0.1, 0.2, 0.3, 0.4],   # no positive: skipped
    ])
    labels = np.array([[1, -1, -1, 1], [-1, 1, -1, -1], [1, -1, 0, -1], [-1, -1, -1, -1]])
    mean, images = per_image_ap(scores, labels)
    assert images == 3
    assert mean == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_per_image_ap_matches_sklearn_label_ranking_ap_without_difficult():
    rng = np.random.default_rng(1)
    labels = np.where(rng.random((50, 20)) < 0.15, 1, -1)
    labels[:, 0] = 1  # every image has a positive, so no image is skipped
    scores = np.round(rng.normal(size=(50, 20)), 1)
    assert per_image_ap(scores, labels)[0] == pytest.approx(label_ranking_average_precision_score(labels == 1, scores))
