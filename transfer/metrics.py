"""Average precision as the VOC07 protocols define it.

Two different numbers share the name "VOC07" in the literature, so both live here:
- `voc_ap`: per class, all-point interpolated AP (VOC2010+ devkit, Goyal et al. 2019, VISSL); the
  mean over the 20 classes is the VOC07 mAP that MoCo, PIRL, SwAV and VISSL report.
- `per_image_ap`: per image, AP of the ranking of the 20 classes, averaged over all images, exactly
  as the reference CLSA code computes what the paper's Table 3 calls "VOC07 accuracy" (93.6).
Labels use the VOC encoding: 1 present, -1 absent, 0 present only as difficult objects. The two
treat the 0s differently: `voc_ap` leaves them out of the class's ranking (the VOC devkit), while
`per_image_ap` counts them as negatives (the reference labels an image by its non-difficult objects).
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
    """Mean over all images of the AP of ranking each image's classes by score, as the CLSA reference
    computes it: sklearn's average_precision_score of each row, summed and divided by the number of rows.

    A class is a positive of an image only if it is labelled 1; a class present only as difficult
    objects (0) is a negative of the image, as in the reference, whose labels keep the non-difficult
    objects. For image i with positives P_i: AP_i = mean_{p in P_i} |{q in P_i: s_q >= s_p}| /
    |{q: s_q >= s_p}| (tied scores form one operating point, as in sklearn). An image without a
    positive scores 0, what sklearn returns for it, and still counts in the mean.
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(labels) == 1
    at_least = scores[:, None, :] >= scores[:, :, None]  # [image, p, q]: class q ranks at or above class p
    precision = (at_least & positive[:, None, :]).sum(2) / at_least.sum(2)
    positives = positive.sum(1)
    ap = (precision * positive).sum(1) / np.maximum(positives, 1)  # 0 where an image has no positive
    return float(ap.mean())
