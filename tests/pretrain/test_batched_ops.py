"""The batched executor's kernels against torchvision.transforms.v2.functional on float images, image by image."""

import functools
import math

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from benchmarks import images
from pretrain.views import batched_ops as ops
from pretrain.views.batched import PaddedImages


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def photo_like(height, width, seed, noise=12.0):
    """uint8 3 x H x W, photo-like (benchmarks.images.photo_like)."""
    return torch.from_numpy(images.photo_like(height, width, np.random.default_rng(seed), noise)).permute(2, 0, 1)


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
        (functools.partial(ops.contrast, grey_levels=False), F.adjust_contrast, FACTORS),
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


def test_crop_upscaled_is_bilinear_inside_and_differs_only_in_a_thin_border():
    image = photo_like(120, 150, 0)
    x = image.float()[None] / 255
    padded = PaddedImages([image], crop_method="roi_align")
    for top, left, height, width, size in [(5, 7, 60, 60, 224), (0, 0, 120, 150, 160), (40, 80, 80, 70, 96)]:
        out = padded.crops(np.array([[top, left, height, width]]), size)[0]
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
        out = padded.crops(np.array([[top, left, height, width]]), size)[0]
        diff = (out - F.resized_crop(x, top, left, height, width, [size, size], antialias=True)).abs() * 255
        assert diff.mean() <= 0.5 and diff.max() <= 3.0, (height, width, size)


def test_crop_by_one_resize_per_crop_equals_v2_resized_crop():
    image = photo_like(120, 150, 0)
    boxes = np.array([[5, 7, 60, 60], [0, 0, 120, 150], [40, 80, 80, 70], [10, 20, 100, 90]])
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
    boxes = np.array([[10, 5, 30, 25], [60, 90, 30, 30], [0, 31, 25, 30]])
    alone = torch.cat(
        [PaddedImages([image], crop_method=crop_method).crops(box[None], 32) for image, box in zip(images, boxes)]
    )
    one_group = PaddedImages(images, crop_method=crop_method)
    several = PaddedImages(images, max_pixels=90 * 120, crop_method=crop_method)
    assert len(one_group.groups) == 1 and len(several.groups) >= 2
    torch.testing.assert_close(one_group.crops(boxes, 32), alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(several.crops(boxes, 32), alone, atol=1e-6, rtol=0)


def test_hsv_conversion_of_hand_checked_colours_and_its_round_trip(batch):
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [0.5, 0.25, 0.0]])
    hsv = ops.rgb_to_hsv(rgb.view(5, 3, 1, 1)).view(5, 3)
    expected = [[0.0, 1.0, 1.0], [1 / 3, 1.0, 1.0], [2 / 3, 1.0, 1.0], [0.0, 0.0, 0.5], [1 / 12, 1.0, 0.5]]
    torch.testing.assert_close(hsv, torch.tensor(expected))
    torch.testing.assert_close(ops.hsv_to_rgb(ops.rgb_to_hsv(batch)), batch, atol=1e-6, rtol=0)
