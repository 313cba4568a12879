"""The per-image kernels (pretrain/views/cpu_ops.py) against torchvision.transforms.v2.functional on uint8."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from benchmarks import images
from pretrain.views import batched_ops, cpu_ops
from pretrain.views.spec import affine_matrices

HEIGHT, WIDTH = 37, 53
FACTORS = [0.05, 0.5, 0.9, 1.0, 1.4]


def make_image(kind, height=HEIGHT, width=WIDTH, seed=0):
    """height x width x 3 uint8, read-only so that a kernel writing to its input fails."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        image = images.photo_like(height, width, rng, 12.0)
    image.flags.writeable = False
    return image


@pytest.fixture(scope="module", params=["noise", "photo"])
def image(request):
    return make_image(request.param)


def v2(kernel, image, *args, **kwargs):
    """`kernel` of v2.functional on the uint8 CHW tensor of `image`, back as H x W x 3."""
    return kernel(torch.tensor(image).permute(2, 0, 1), *args, **kwargs).permute(1, 2, 0).numpy()


def differences(out, expected):
    """(largest grey-level difference, fraction of values that differ), once `out` has the kernels' layout."""
    assert out.dtype == np.uint8 and out.shape == expected.shape and out.flags.c_contiguous
    diff = np.abs(out.astype(np.int16) - expected)
    return int(diff.max()), float((diff > 0).mean())


@pytest.mark.parametrize(
    "kernel, reference, params",
    [
        (cpu_ops.brightness, F.adjust_brightness, FACTORS),
        (cpu_ops.contrast, F.adjust_contrast, FACTORS),
        (cpu_ops.solarize, F.solarize, [0, 1, 128, 255]),
        (cpu_ops.posterize, F.posterize, [4, 5, 6, 7, 8]),
    ],
)
def test_point_ops_equal_v2(image, kernel, reference, params):
    for p in params:
        np.testing.assert_array_equal(kernel(image, p), v2(reference, image, p), err_msg=f"{kernel.__name__}({p})")


@pytest.mark.parametrize(
    "kernel, reference",
    [
        (cpu_ops.grayscale, lambda t: F.rgb_to_grayscale(t, num_output_channels=3)),
        (cpu_ops.hflip, F.horizontal_flip),
        (cpu_ops.autocontrast, F.autocontrast),
        (cpu_ops.equalize, F.equalize),
        (cpu_ops.invert, F.invert),
    ],
)
def test_parameterless_ops_equal_v2(image, kernel, reference):
    assert differences(kernel(image), v2(reference, image)) == (0, 0.0)


def test_autocontrast_and_equalize_leave_a_flat_channel_as_v2_does(image):
    flat = image.copy()
    flat[..., 1] = 77
    for kernel, reference in ((cpu_ops.autocontrast, F.autocontrast), (cpu_ops.equalize, F.equalize)):
        np.testing.assert_array_equal(kernel(flat), v2(reference, flat))


def test_solarize_at_256_and_posterize_at_8_bits_return_the_image(image):
    # v2's uint8 solarize rejects 256, Table 1's top threshold, rather than inverting nothing.
    assert cpu_ops.solarize(image, 256) is image
    assert cpu_ops.posterize(image, 8) is image


def test_grayscale_equals_v2_on_all_but_three_of_the_2_24_colours():
    codes = np.arange(1 << 24, dtype=np.uint32)
    colours = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    mine = cpu_ops.grayscale(colours)[..., 0]
    theirs = F.rgb_to_grayscale(torch.from_numpy(colours).permute(2, 0, 1))[0].numpy()
    assert np.abs(mine.astype(np.int16) - theirs).max() == 1
    assert np.count_nonzero(mine != theirs) <= 3


@pytest.mark.parametrize(
    "kernel, reference, params, max_fraction",
    [
        # v2 truncates float32 blends that land just below an exact integer, which factors such as 0.9
        # and 1.4 make common (up to 6.4% of values); test_blends_floor_the_exact_blend pins ours.
        (cpu_ops.saturation, F.adjust_saturation, FACTORS, 0.07),
        (cpu_ops.sharpness, F.adjust_sharpness, FACTORS, 0.01),
        (cpu_ops.hue, F.adjust_hue, [-0.5, -0.1, -0.03, 0.0, 0.1, 0.5], 1e-3),
    ],
)
def test_colour_ops_are_within_one_grey_level_of_v2(image, kernel, reference, params, max_fraction):
    for p in params:
        worst, fraction = differences(kernel(image, p), v2(reference, image, p))
        assert worst <= 1 and fraction <= max_fraction, f"{kernel.__name__}({p}): {worst} levels on {fraction:.2%}"


def exact_saturation(image, percent):
    """floor(f x + (1 - f) gray) in integers, f = percent / 100, gray as v2 computes it."""
    gray = F.rgb_to_grayscale(torch.tensor(image).permute(2, 0, 1))[0].numpy().astype(np.int64)[..., None]
    return (percent * image.astype(np.int64) + (100 - percent) * gray) // 100


def exact_sharpness(image, percent):
    """floor(f x + (1 - f) smooth) in integers inside the one-pixel border, smooth as PIL's SMOOTH rounded."""
    x = image.astype(np.int64)
    sums = 4 * x[1:-1, 1:-1] + sum(
        x[1 + i : x.shape[0] - 1 + i, 1 + j : x.shape[1] - 1 + j] for i in (-1, 0, 1) for j in (-1, 0, 1)
    )
    smooth = (2 * sums + 13) // 26  # sums / 13 rounded; never a tie
    out = x.copy()
    out[1:-1, 1:-1] = (percent * x[1:-1, 1:-1] + (100 - percent) * smooth) // 100
    return out


@pytest.mark.parametrize(
    "kernel, exact", [(cpu_ops.saturation, exact_saturation), (cpu_ops.sharpness, exact_sharpness)]
)
def test_blends_floor_the_exact_blend(image, kernel, exact):
    for factor in FACTORS:
        expected = np.clip(exact(image, round(factor * 100)), 0, 255)
        np.testing.assert_array_equal(kernel(image, factor), expected, err_msg=f"{kernel.__name__}({factor})")


@pytest.mark.parametrize(
    "kernel, reference",
    [(cpu_ops.saturation, F.adjust_saturation), (cpu_ops.sharpness, F.adjust_sharpness)],
)
def test_blends_at_random_factors_rarely_differ_from_v2(kernel, reference):
    image = make_image("photo", 96, 96)
    fractions = [
        differences(kernel(image, f), v2(reference, image, f))[1]
        for f in np.random.default_rng(0).uniform(0.05, 1.4, 20)
    ]
    assert np.mean(fractions) <= 0.005


@pytest.mark.parametrize("kernel_size, sigma", [(9, 0.1), (9, 2.0), (23, 0.1), (23, 2.0)])
def test_gaussian_blur_is_within_one_grey_level_of_v2(image, kernel_size, sigma):
    worst, fraction = differences(
        cpu_ops.gaussian_blur(image, kernel_size, sigma), v2(F.gaussian_blur, image, [kernel_size] * 2, [sigma] * 2)
    )
    assert worst <= 1 and fraction <= 1e-3


@pytest.mark.parametrize(
    "top, left, height, width, size",
    [(0, 0, HEIGHT, WIDTH, 224), (3, 5, 30, 40, 16), (10, 20, 27, 33, 24), (1, 2, 31, 31, 31), (4, 4, 8, 12, 96)],
)
def test_resized_crop_equals_v2_up_to_the_box_edges(image, top, left, height, width, size):
    out = cpu_ops.resized_crop(Image.fromarray(image), top, left, height, width, size)
    reference = v2(F.resized_crop, image, top, left, height, width, [size, size], antialias=True)
    assert differences(out, reference) == (0, 0.0)


AFFINE_CASES = [
    ("ShearX", -0.3),
    ("ShearX", 0.3),
    ("ShearY", -0.3),
    ("ShearY", 0.3),
    ("TranslateX", -0.3),
    ("TranslateX", 0.3),
    ("TranslateY", -0.3),
    ("TranslateY", 0.3),
    ("Rotate", -30.0),
    ("Rotate", 30.0),
]


def batched_affine(image, name, magnitude):
    """`image` through one geometric op by the batched float kernel, as uint8."""
    matrices = torch.from_numpy(affine_matrices([name], [magnitude], *image.shape[:2]))
    out = batched_ops.affine(torch.tensor(image).permute(2, 0, 1)[None].float(), matrices)
    return out[0].permute(1, 2, 0).round().to(torch.uint8).numpy()


def changed_pixels(out, expected):
    assert out.dtype == np.uint8 and out.shape == expected.shape and out.flags.c_contiguous
    return float((out != expected).any(axis=-1).mean())


@pytest.mark.parametrize("name, magnitude", AFFINE_CASES)
def test_affine_breaks_nearest_neighbour_ties_differently_on_few_pixels(image, name, magnitude):
    out = cpu_ops.affine(image, affine_matrices([name], [magnitude], HEIGHT, WIDTH)[0])
    # Rotations by 30 degrees put many sampling points halfway between two pixels (0.5% measured).
    assert changed_pixels(out, batched_affine(image, name, magnitude)) <= 0.01


def test_affine_at_random_magnitudes_rarely_differs_from_the_batched_kernel():
    image = make_image("noise")
    rng = np.random.default_rng(0)
    for name, limit in (("ShearX", 0.3), ("ShearY", 0.3), ("Rotate", 30.0)):
        fractions = []
        for magnitude in rng.uniform(-limit, limit, 30):
            out = cpu_ops.affine(image, affine_matrices([name], [magnitude], HEIGHT, WIDTH)[0])
            fractions.append(changed_pixels(out, batched_affine(image, name, magnitude)))
        assert np.mean(fractions) <= 1e-3, name


@pytest.mark.parametrize(
    "name, magnitude, reference",
    [
        # Shears pivot on the top-left corner, as PIL's AFFINE; rotations turn counter-clockwise about the centre.
        ("ShearX", 0.3, lambda t: F.affine(t, 0.0, [0, 0], 1.0, [math.degrees(math.atan(0.3)), 0.0], center=[0, 0])),
        ("ShearY", -0.3, lambda t: F.affine(t, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(-0.3))], center=[0, 0])),
        ("TranslateX", 0.3, lambda t: F.affine(t, 0.0, [round(0.3 * WIDTH), 0], 1.0, [0.0, 0.0])),
        ("Rotate", 20.0, lambda t: F.rotate(t, 20.0)),
    ],
)
def test_affine_matches_v2_affine_and_rotate(image, name, magnitude, reference):
    out = cpu_ops.affine(image, affine_matrices([name], [magnitude], HEIGHT, WIDTH)[0])
    assert changed_pixels(out, v2(reference, image)) <= 0.01
