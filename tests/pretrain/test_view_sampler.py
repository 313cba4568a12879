"""The view sampler: its draws against the paper's distributions, and its seeding by (seed, epoch, index)."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

from common.errors import ConfigError
from pretrain.config import get_cfg, load_config
from pretrain.views.sampler import crop_boxes, sample
from pretrain.views.spec import STRONG_OPS, Views, ViewSet, ViewSpec

# Distributions: drawn with a fixed seed and held against the configured ones (p > 0.001 each, so a
# correct sampler fails none of these tests by chance in this fixed draw, and a wrong one fails them).
P_MIN = 1e-3
SINGLE = ViewSet(Views(ViewSpec(224, (0.2, 1.0)), [ViewSpec(224, (0.2, 1.0))], [ViewSpec(96, (0.086, 0.429), True)]))


def test_crop_boxes_follow_v2_randomresizedcrop():
    height, width, n = 375, 500, 4000
    one_view = ViewSet(Views(ViewSpec(224, (0.2, 1.0)), [], []))
    boxes = crop_boxes(sample(one_view, 0, 0, range(n)).key, [height] * n, [width] * n)
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(224, scale=(0.2, 1.0))
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    reference = np.array(
        [[p["top"], p["left"], p["height"], p["width"]] for p in (crop.make_params([image]) for _ in range(n))]
    )
    for column, name in enumerate(["top", "left", "height", "width"]):
        assert stats.ks_2samp(boxes[:, column], reference[:, column]).pvalue > P_MIN, name
    area = boxes[:, 2] * boxes[:, 3] / (height * width)
    assert stats.ks_2samp(area, reference[:, 2] * reference[:, 3] / (height * width)).pvalue > P_MIN
    assert (boxes[:, 0] + boxes[:, 2] <= height).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()
    assert (boxes >= 0).all() and (boxes[:, 2:] > 0).all()


def test_crop_falls_back_to_the_centre_with_the_ratio_clamped():
    # No crop of >= 90% area fits a 10 x 200 strip at aspect 3/4..4/3: v2 takes the central 13 x 10.
    large = ViewSet(Views(ViewSpec(32, (0.9, 1.0)), [], []))
    boxes = crop_boxes(sample(large, 0, 0, range(50)).key, [10] * 50, [200] * 50)
    assert (boxes == [0, 93, 10, 13]).all()


def test_strong_op_choice_application_and_magnitudes_follow_table_1():
    n, rounds = 4000, 5
    params = sample(SINGLE, 0, 0, range(n)).strong[0]
    picks, applied, magnitudes = params.strong_ops, params.strong_applied, params.strong_magnitudes
    assert picks.shape == (n, rounds)
    assert stats.chisquare(np.bincount(picks.ravel(), minlength=14)).pvalue > P_MIN
    assert stats.binomtest(int(applied.sum()), applied.size, 0.5).pvalue > P_MIN
    for k, op in enumerate(STRONG_OPS):
        m = magnitudes[picks == k]
        if op.low is None:
            continue
        if op.integer:
            values = np.arange(int(op.low), int(op.high) + 1)
            observed = np.array([(m == v).sum() for v in values])
            assert observed.sum() == len(m) and stats.chisquare(observed).pvalue > P_MIN, op.name
        else:
            assert stats.kstest(m, stats.uniform(op.low, op.high - op.low).cdf).pvalue > P_MIN, op.name


def test_weak_draws_follow_moco_v2_aug_plus():
    n = 8000
    params = sample(SINGLE, 0, 0, range(n)).key
    for flags, p in [(params.jitter, 0.8), (params.grayscale, 0.2), (params.blur, 0.5), (params.flip, 0.5)]:
        assert stats.binomtest(int(flags.sum()), n, p).pvalue > P_MIN
    for column, (low, high) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        assert stats.kstest(params.jitter_factors[:, column], stats.uniform(low, high - low).cdf).pvalue > P_MIN
    assert stats.kstest(params.blur_sigma, stats.uniform(0.1, 1.9).cdf).pvalue > P_MIN
    orders = {perm: i for i, perm in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([orders[tuple(row)] for row in params.jitter_order.tolist()], minlength=24)
    assert stats.chisquare(counts).pvalue > P_MIN


def test_the_colour_keys_set_the_weak_stages_jitter_and_grayscale():
    cfg = get_cfg()
    cfg.merge_from_list(["DATA.COLOR_JITTER", "[1.5, 0.0, 0.8, 0.5]", "DATA.COLOR_JITTER_PROB", "1.0"])
    cfg.merge_from_list(["DATA.GRAYSCALE_PROB", "0.5"])
    n = 8000
    params = sample(ViewSet.from_cfg(cfg), 0, 0, range(n)).weak[0]
    assert params.jitter.all() and stats.binomtest(int(params.grayscale.sum()), n, 0.5).pvalue > P_MIN
    # ColorJitter's ranges: [max(0, 1 - s), 1 + s] for a factor, [-h, h] for the hue shift.
    for column, (low, high) in enumerate([(0.0, 2.5), (1.0, 1.0), (0.2, 1.8), (-0.5, 0.5)]):
        factors = params.jitter_factors[:, column]
        if low == high:
            assert (factors == low).all()
        else:
            assert stats.kstest(factors, stats.uniform(low, high - low).cdf).pvalue > P_MIN


@pytest.mark.parametrize("value", ["[0.4, 0.4, 0.4, 0.6]", "[0.4, -0.1, 0.4, 0.1]", "[0.4, 0.4, 0.4]"])
def test_a_colour_jitter_outside_colorjitters_ranges_is_refused(value):
    with pytest.raises(ConfigError, match=r"^DATA.COLOR_JITTER is .*; it must be \[brightness, contrast"):
        load_config("", ["DATA.COLOR_JITTER", value], world_size=1)


def test_views_are_drawn_independently_of_each_other():
    params = sample(SINGLE, 0, 0, range(2000))
    assert abs(np.corrcoef(params.key.blur_sigma, params.weak[0].blur_sigma)[0, 1]) < 0.1
    assert abs(np.corrcoef(params.key.crop_area[:, 0], params.strong[0].crop_area[:, 0])[0, 1]) < 0.1


def flat_record(views):
    return np.concatenate(
        [
            np.asarray(value, dtype=np.float64).ravel()
            for p in views.flat()
            for value in vars(p).values()
            if value is not None
        ]
    )


def test_an_images_draws_depend_only_on_seed_epoch_and_index():
    batch = sample(SINGLE, 3, 5, [7, 11, 2])
    alone = sample(SINGLE, 3, 5, [11])
    in_other_order = sample(SINGLE, 3, 5, [2, 11])
    rows = Views.map(batch, lambda p: p.rows(slice(1, 2)))
    np.testing.assert_array_equal(flat_record(rows), flat_record(alone))
    np.testing.assert_array_equal(
        flat_record(Views.map(in_other_order, lambda p: p.rows(slice(1, 2)))), flat_record(alone)
    )
    for other in [sample(SINGLE, 4, 5, [11]), sample(SINGLE, 3, 6, [11]), sample(SINGLE, 3, 5, [12])]:
        assert not np.array_equal(flat_record(other), flat_record(alone))


def test_a_view_records_strong_draws_only_if_strong():
    params = sample(SINGLE, 0, 0, [0])
    assert params.key.strong_ops is None and params.weak[0].strong_ops is None
    assert params.strong[0].strong_ops.shape == (1, 5)


@pytest.mark.parametrize("num_ops", [0, 1, 5])
def test_rounds_follow_the_view_sets_count(num_ops):
    view_set = ViewSet(SINGLE.views, num_ops=num_ops)
    assert sample(view_set, 0, 0, [0, 1]).strong[0].strong_ops.shape == (2, num_ops)
