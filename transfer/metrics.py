"""Average precision as the VOC07 protocols define it.

Two different numbers share the name "VOC07" in the literature, so both live here:
- `voc_ap`: per class, all-point interpolated AP (VOC2010+ devkit, Goyal et al. 2019, VISSL); the
  mean over the 20 classes is the VOC07 mAP that MoCo, PIRL, SwAV and VISSL report.
- `per_image_ap`: per image, AP of the ranking of the 20 classes; the mean over images is what the
  reference CLSA code computes and the paper's Table 3 calls "VOC07 accuracy" (93.6).
Labels use the VOC encoding: 1 present, -1 absent, 0 difficult.
"""
import numpy as np


def voc_ap(scores, labels):
    """All-point interpolated AP of one class; images labelled 0 (difficult) are left out.

    Tied scores form one operating point (they cannot be ordered), and precision is replaced by its
    monotone envelope max_{r' >= r} p(r') before summing over recall steps.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] == 1
    if not positive.any():
        raise ValueError("AP is undefined for a class with no positive (non-difficult) image")
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    # The last index of each group of tied scores is an operating point.
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    tp = np.cumsum(positive)[last_of_tie]
    seen = np.flatnonzero(last_of_tie) + 1
    precision, recall = tp / seen, tp / positive.sum()
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))


def per_class_voc_ap(scores, labels):
    """`voc_ap` of each column of (images x classes) arrays."""
    return np.array([voc_ap(scores[:, c], labels[:, c]) for c in range(labels.shape[1])])


def per_image_ap(scores, labels):
    """(mean over images of the AP of ranking that image's classes by score, images counted).

    For image i with positive classes P_i: AP_i = mean_{p in P_i} |{q in P_i: s_q >= s_p}| /
    |{q: s_q >= s_p}|, i.e. the label-ranking AP; ties rank pessimistically, as in sklearn. Difficult
    labels (0) of an image are left out of its ranking, and images with no positive label are skipped
    (their AP is undefined), so the second value says how many images were averaged.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    aps = []
    for s, y in zip(scores, labels):
        s, positive = s[y != 0], y[y != 0] == 1
        if not positive.any():
            continue
        at_least = s[None, :] >= s[positive][:, None]  # [p, q]: class q ranks at or above positive p
        aps.append(np.mean(at_least[:, positive].sum(1) / at_least.sum(1)))
    if not aps:
        raise ValueError("no image has a positive label")
    return float(np.mean(aps)), len(aps)
