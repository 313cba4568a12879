"""The batched data path against torchvision.transforms.v2.functional, image by image, on the CPU."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from common import synthetic
from pretrain import batched_ops as ops
from pretrain.augment import PRESET_VIEWS, STRONG_OPS, MultiViewTransform, StrongAugment, blur_kernel_size
from pretrain.batched_augment import (
    BatchedViews,
    PaddedImages,
    ViewParams,
    batch_generator,
    sample_crop_boxes,
    sample_strong_ops,
)

STRONG_NAMES = list(STRONG_OPS)


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def photo_like(height, width, seed, noise=12.0):
    """uint8 3 x H x W, photo-like (common.synthetic.photo_like)."""
    return torch.from_numpy(synthetic.photo_like(height, width, np.random.default_rng(seed), noise)).permute(2, 0, 1)


@pytest.fixture(scope="module")
def batch_u8():
    return torch.stack([photo_like(33, 47, seed) for seed in range(5)])


@pytest.fixture(scope="module")
def batch(batch_u8):
    return batch_u8.float() / 255


def per_image(fn, images, params):
    return torch.stack([fn(image, float(p)) for image, p in zip(images, params)])


FACTORS = torch.tensor([0.05, 0.5, 0.95, 1.3, 1.0])


@pytest.mark.parametrize(
    "batched, reference, params",
    [
        (ops.brightness, F.adjust_brightness, FACTORS),
        (ops.contrast, F.adjust_contrast, FACTORS),
        (ops.saturation, F.adjust_saturation, FACTORS),
        (ops.sharpness, F.adjust_sharpness, FACTORS),
        (ops.hue, F.adjust_hue, torch.tensor([-0.1, -0.03, 0.0, 0.05, 0.1])),
    ],
)
def test_colour_ops_with_one_factor_per_image_equal_v2_float(batch, batched, reference, params):
    expected = per_image(reference, batch, params)
    torch.testing.assert_close(batched(batch.clone(), params), expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "batched, reference",
    [
        (ops.invert, F.invert),
        (ops.autocontrast, F.autocontrast),
        (ops.grayscale, lambda x: F.rgb_to_grayscale(x, 3)),
        (ops.hflip, F.horizontal_flip),
    ],
)
def test_parameterless_ops_equal_v2_float(batch, batched, reference):
    torch.testing.assert_close(batched(batch.clone()), torch.stack([reference(x) for x in batch]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("kernel_size", [3, 9, 23])
def test_gaussian_blur_with_one_sigma_per_image_equals_v2(batch, kernel_size):
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    expected = torch.stack([F.gaussian_blur(x, [kernel_size] * 2, [float(s)] * 2) for x, s in zip(batch, sigmas)])
    torch.testing.assert_close(ops.gaussian_blur(batch, kernel_size, sigmas), expected, atol=1e-3, rtol=0)


def to_levels(images):
    return (images * 255).round().to(torch.int16)


@pytest.mark.parametrize(
    "name, magnitudes",
    [
        ("Solarize", [0, 1, 128, 255, 256]),
        ("Posterize", [4, 5, 6, 7, 8]),
        ("Equalize", [0] * 5),
        ("ShearX", [-0.3, -0.1, 0.0, 0.17, 0.3]),
        ("ShearY", [-0.3, -0.05, 0.1, 0.2, 0.3]),
        ("TranslateX", [-0.3, -0.11, 0.0, 0.13, 0.3]),
        ("TranslateY", [-0.3, -0.2, 0.04, 0.2, 0.3]),
        ("Rotate", [-30.0, -12.5, 0.0, 7.0, 30.0]),
    ],
)
def test_table_1_ops_on_grey_levels_equal_the_uint8_cpu_path_within_one_level(batch_u8, name, magnitudes):
    """Against pretrain.augment.STRONG_OPS on uint8 images, the workers path's kernels."""
    m = torch.tensor(magnitudes, dtype=torch.float64)
    x = batch_u8.float() / 255
    if name in ops.AFFINE_OPS:
        out = ops.affine(x, ops.affine_matrices(torch.full((5,), ops.AFFINE_OPS.index(name)), m, 33, 47))
    else:
        out = {
            "Solarize": ops.solarize,
            "Posterize": ops.posterize,
            "Equalize": lambda images, _: ops.equalize(images),
        }[name](x, m)
    expected = torch.stack([STRONG_OPS[name].apply(image, mag) for image, mag in zip(batch_u8, magnitudes)])
    assert (to_levels(out) - expected.to(torch.int16)).abs().max() <= 1


def test_crop_upscaled_is_bilinear_inside_and_differs_only_in_a_thin_border():
    image = photo_like(120, 150, 0)
    x = image.float()[None] / 255
    padded = PaddedImages([image], crop_method="roi_align")
    for top, left, height, width, size in [(5, 7, 60, 60, 224), (0, 0, 120, 150, 160), (40, 80, 80, 70, 96)]:
        out = padded.crops(torch.tensor([[top, left, height, width]]), size)[0]
        expected = F.resized_crop(x[0], top, left, height, width, [size, size], antialias=True)
        # Output pixels that sample within half an input pixel of the crop's edge read the neighbours
        # just outside the crop; v2 clamps to the crop's edge pixel there.
        ring = math.ceil(size / (2 * min(height, width)))
        inside = (slice(None), slice(ring, -ring), slice(ring, -ring))
        torch.testing.assert_close(out[inside], expected[inside], atol=1e-3, rtol=0)
        # ... so the gap there is at most one step between neighbouring pixels.
        step = max((x[..., 1:, :] - x[..., :-1, :]).abs().max(), (x[..., 1:] - x[..., :-1]).abs().max())
        assert (out - expected).abs().max() <= step


def test_crop_downscaled_is_a_box_filter_within_3_grey_levels_of_v2_triangle_filter():
    # Mild noise, like a photo; a crop one pixel off is >= 0.8 levels off on average on this image.
    image = photo_like(375, 500, 1, noise=3.0)
    x = image.float() / 255
    padded = PaddedImages([image], crop_method="roi_align")
    for top, left, height, width, size in [
        (50, 100, 300, 300, 96),
        (0, 0, 375, 500, 224),
        (20, 30, 200, 150, 96),
        (5, 7, 110, 100, 96),
    ]:
        out = padded.crops(torch.tensor([[top, left, height, width]]), size)[0]
        diff = (out - F.resized_crop(x, top, left, height, width, [size, size], antialias=True)).abs() * 255
        assert diff.mean() <= 0.5 and diff.max() <= 3.0, (height, width, size)


def test_crop_by_one_resize_per_crop_equals_v2_resized_crop():
    image = photo_like(120, 150, 0)
    boxes = torch.tensor([[5, 7, 60, 60], [0, 0, 120, 150], [40, 80, 80, 70], [10, 20, 100, 90]])
    padded = PaddedImages([image] * 4, crop_method="interpolate")
    for size in (224, 96):
        expected = torch.stack(
            [F.resized_crop(image.float() / 255, *box, [size, size], antialias=True) for box in boxes.tolist()]
        )
        torch.testing.assert_close(padded.crops(boxes, size), expected, atol=1e-5, rtol=0)


def test_crop_method_defaults_to_the_faster_one_on_the_device():
    assert PaddedImages([photo_like(8, 8, 0)]).crop_method == "interpolate"
    assert PaddedImages([photo_like(8, 8, 0).to("meta")]).crop_method == "roi_align"


@pytest.mark.parametrize("crop_method", ["roi_align", "interpolate"])
def test_padding_and_grouping_never_change_a_crop(crop_method):
    images = [photo_like(40, 30, 0), photo_like(90, 120, 1), photo_like(25, 61, 2)]
    # Boxes reaching each image's bottom-right corner, where padding would show first.
    boxes = torch.tensor([[10, 5, 30, 25], [60, 90, 30, 30], [0, 31, 25, 30]])
    alone = torch.cat(
        [PaddedImages([image], crop_method=crop_method).crops(box[None], 32) for image, box in zip(images, boxes)]
    )
    one_group = PaddedImages(images, crop_method=crop_method)
    several = PaddedImages(images, max_pixels=90 * 120, crop_method=crop_method)
    assert len(one_group.groups) == 1 and len(several.groups) >= 2
    torch.testing.assert_close(one_group.crops(boxes, 32), alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(several.crops(boxes, 32), alone, atol=1e-6, rtol=0)


def still_params(n, size, strong=None):
    """ViewParams whose crop is the whole image at its own size and whose random ops are all off."""
    off = torch.zeros(n, dtype=torch.bool)
    return ViewParams(
        boxes=torch.tensor([[0, 0, size, size]] * n),
        jitter=off.clone(),
        jitter_order=torch.arange(4).repeat(n, 1),
        jitter_factors=torch.ones(n, 4, dtype=torch.float64),
        grayscale=off.clone(),
        blur=off.clone(),
        blur_sigma=torch.ones(n, dtype=torch.float64),
        flip=off.clone(),
        **(strong or {}),
    )


def normalise(x):
    return F.normalize(x, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def test_weak_view_with_fixed_draws_equals_v2_in_each_images_jitter_order():
    size, n = 40, 6
    images = [photo_like(size, size, seed) for seed in range(n)]
    params = still_params(n, size)
    params.jitter[:] = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool)
    params.jitter_order = torch.tensor(
        [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2], [0, 1, 2, 3], [3, 0, 1, 2]]
    )
    params.jitter_factors = torch.tensor(
        [
            [0.6, 1.4, 0.7, 0.1],
            [1.3, 0.6, 1.4, -0.1],
            [0.9, 1.2, 0.6, 0.05],
            [1.4, 0.7, 1.1, -0.07],
            [0.6, 0.6, 0.6, 0.1],
            [0.8, 1.3, 0.9, 0.02],
        ],
        dtype=torch.float64,
    )
    params.grayscale[[1, 3]] = True
    params.blur[[0, 3, 5]] = True
    params.blur_sigma = torch.tensor([0.3, 1.0, 1.0, 2.0, 1.0, 1.2], dtype=torch.float64)
    params.flip[[2, 3]] = True
    views = BatchedViews(key_size=size)
    out = views.apply(PaddedImages(images), [params])[0]

    jitter_fns = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    for i, image in enumerate(images):
        x = image.float() / 255
        if params.jitter[i]:
            for op_index in params.jitter_order[i].tolist():
                x = jitter_fns[op_index](x, float(params.jitter_factors[i, op_index]))
        if params.grayscale[i]:
            x = F.rgb_to_grayscale(x, 3)
        if params.blur[i]:
            sigma = float(params.blur_sigma[i])
            x = F.gaussian_blur(x, [blur_kernel_size(size)] * 2, [sigma, sigma])
        if params.flip[i]:
            x = F.horizontal_flip(x)
        torch.testing.assert_close(out[i], normalise(x), atol=5e-3, rtol=0)


def test_strong_rounds_with_fixed_draws_follow_strongaugment_on_uint8():
    """Five rounds against StrongAugment.transform on uint8. The CPU path truncates to uint8 after
    every op and the batched path stays float, so chains drift by a level or two, and a threshold op
    (posterize, solarize) can turn that into a whole step: the mean gap per image is bounded, and
    nearly all pixels agree within 2 levels."""
    size, n, rounds = 48, 24, 5
    images = [photo_like(size, size, seed) for seed in range(n)]
    picks, applied, magnitudes = sample_strong_ops(n, rounds, 0.5, torch.Generator().manual_seed(3))
    params = still_params(n, size, {"strong_ops": picks, "strong_applied": applied, "strong_magnitudes": magnitudes})
    out = BatchedViews(key_size=size, strong_key=True).apply(PaddedImages(images), [params])[0]
    strong, within_2 = StrongAugment(rounds), []
    for i, image in enumerate(images):
        chosen = [
            (STRONG_NAMES[k], int(m) if STRONG_OPS[STRONG_NAMES[k]].integer else m)
            for k, keep, m in zip(picks[i].tolist(), applied[i].tolist(), magnitudes[i].tolist())
            if keep
        ]
        expected = normalise(strong.transform(image, {"ops": chosen}).float() / 255)
        levels = (out[i] - expected).abs() * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255
        assert levels.mean() <= 1.5, chosen
        within_2.append((levels <= 2 + 1e-3).float().mean())
    assert torch.stack(within_2).mean() >= 0.95


@pytest.mark.parametrize("crop_method", ["roi_align", "interpolate"])
def test_views_keep_their_count_and_sizes_for_every_preset(crop_method):
    images = [photo_like(64, 80, 0), photo_like(100, 70, 1)]
    for name, views in PRESET_VIEWS.items():
        expected = [tuple(v.shape) for v in MultiViewTransform.from_preset(name)(images[0])]
        out = BatchedViews(**views, crop_method=crop_method)(images, batch_generator(0, 0, 0))
        assert [tuple(v.shape[1:]) for v in out] == expected and all(v.shape[0] == 2 for v in out), name


def test_gpu_crop_method_changes_whole_views_by_a_fraction_of_a_grey_level():
    """The full pipeline with roi_align crops (the GPU's) against exact v2 resizes, same draws."""
    images = [photo_like(375, 500, seed, noise=3.0) for seed in range(8)]
    views = {
        method: BatchedViews(**PRESET_VIEWS["clsa_single"], crop_method=method)(images, batch_generator(0, 0, 0))
        for method in ("roi_align", "interpolate")
    }
    for gpu, exact in zip(views["roi_align"], views["interpolate"]):
        levels = (gpu - exact).abs() * 0.226 * 255
        assert levels.mean() <= 0.25 and levels.flatten().quantile(0.99) <= 2.0


def test_output_is_in_the_training_dtype_and_memory_format():
    out = BatchedViews(**PRESET_VIEWS["clsa_single"])(
        [photo_like(64, 80, 0)] * 2, batch_generator(0, 0, 0), dtype=torch.bfloat16, memory_format=torch.channels_last
    )
    assert all(v.dtype == torch.bfloat16 and v.is_contiguous(memory_format=torch.channels_last) for v in out)


@pytest.mark.parametrize("crop_method", ["roi_align", "interpolate"])
def test_generator_seed_repeats_per_iteration_and_differs_across_ranks_and_iterations(crop_method):
    images = [photo_like(64, 80, 0), photo_like(50, 70, 1)]
    views = BatchedViews(**PRESET_VIEWS["clsa_single"], crop_method=crop_method)

    def run(seed, rank, iteration):
        return torch.cat([v.flatten() for v in views(images, batch_generator(seed, rank, iteration))])

    assert torch.equal(run(0, 0, 7), run(0, 0, 7))
    assert not torch.equal(run(0, 0, 7), run(0, 1, 7))
    assert not torch.equal(run(0, 0, 7), run(0, 0, 8))
    assert not torch.equal(run(0, 0, 7), run(1, 0, 7))


# Distributions: drawn with a fixed seed and held against the configured ones (p > 0.001 each, so a
# correct sampler fails none of these tests by chance in this fixed draw, and a wrong one fails them).
P_MIN = 1e-3


def test_crop_boxes_follow_v2_randomresizedcrop():
    height, width, n = 375, 500, 4000
    boxes = sample_crop_boxes([height] * n, [width] * n, (0.2, 1.0), torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(224, scale=(0.2, 1.0))
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    reference = torch.tensor(
        [[p["top"], p["left"], p["height"], p["width"]] for p in (crop.make_params([image]) for _ in range(n))]
    )
    for column, name in enumerate(["top", "left", "height", "width"]):
        assert stats.ks_2samp(boxes[:, column], reference[:, column]).pvalue > P_MIN, name
    area = (boxes[:, 2] * boxes[:, 3]).double() / (height * width)
    assert stats.ks_2samp(area, (reference[:, 2] * reference[:, 3]).double() / (height * width)).pvalue > P_MIN
    assert (boxes[:, 0] + boxes[:, 2] <= height).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()
    assert (boxes >= 0).all() and (boxes[:, 2:] > 0).all()


def test_crop_falls_back_to_the_centre_with_the_ratio_clamped():
    # No crop of >= 90% area fits a 10 x 200 strip at aspect 3/4..4/3: v2 takes the central 13 x 10.
    boxes = sample_crop_boxes([10] * 50, [200] * 50, (0.9, 1.0), torch.Generator().manual_seed(0))
    assert (boxes == torch.tensor([0, 93, 10, 13])).all()


def test_strong_op_choice_application_and_magnitudes_follow_table_1():
    n, rounds = 20000, 5
    picks, applied, magnitudes = sample_strong_ops(n, rounds, 0.5, torch.Generator().manual_seed(0))
    counts = torch.bincount(picks.flatten(), minlength=14).numpy()
    assert stats.chisquare(counts).pvalue > P_MIN
    assert stats.binomtest(int(applied.sum()), applied.numel(), 0.5).pvalue > P_MIN
    for k, name in enumerate(STRONG_NAMES):
        op, m = STRONG_OPS[name], magnitudes[picks == k]
        if op.low is None:
            continue
        if op.integer:
            values = np.arange(int(op.low), int(op.high) + 1)
            observed = np.array([(m == v).sum().item() for v in values])
            assert observed.sum() == len(m) and stats.chisquare(observed).pvalue > P_MIN, name
        else:
            assert stats.kstest(m.numpy(), stats.uniform(op.low, op.high - op.low).cdf).pvalue > P_MIN, name


def test_weak_draws_follow_moco_v2_aug_plus():
    n = 20000
    params = BatchedViews(key_size=224).sample([300] * n, [400] * n, torch.Generator().manual_seed(0))[0]
    for flags, p in [(params.jitter, 0.8), (params.grayscale, 0.2), (params.blur, 0.5), (params.flip, 0.5)]:
        assert stats.binomtest(int(flags.sum()), n, p).pvalue > P_MIN
    for column, (low, high) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        factors = params.jitter_factors[:, column].numpy()
        assert stats.kstest(factors, stats.uniform(low, high - low).cdf).pvalue > P_MIN
    assert stats.kstest(params.blur_sigma.numpy(), stats.uniform(0.1, 1.9).cdf).pvalue > P_MIN
    orders = {perm: i for i, perm in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([orders[tuple(row)] for row in params.jitter_order.tolist()], minlength=24)
    assert stats.chisquare(counts).pvalue > P_MIN


def test_strong_ops_can_all_run_at_the_extremes_of_their_ranges():
    images = [photo_like(30, 30, 0)] * 2
    for k, name in enumerate(STRONG_NAMES):
        op = STRONG_OPS[name]
        for magnitude in [0.0] if op.low is None else [op.low, op.high]:
            params = still_params(
                2,
                30,
                {
                    "strong_ops": torch.full((2, 1), k),
                    "strong_applied": torch.ones(2, 1, dtype=torch.bool),
                    "strong_magnitudes": torch.full((2, 1), float(magnitude), dtype=torch.float64),
                },
            )
            out = BatchedViews(key_size=30, strong_key=True).apply(PaddedImages(images), [params])[0]
            assert torch.isfinite(out).all() and not math.isnan(float(out.mean())), name
