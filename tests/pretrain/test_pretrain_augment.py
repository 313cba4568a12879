import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from scipy import stats
from torchvision.transforms import v2

from pretrain.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESET_VIEWS,
    STRONG_OPS,
    MatmulGaussianBlur,
    MultiViewTransform,
    StrongAugment,
    strong_transform,
    weak_transform,
)

# Table 1 of the paper, typed in again here so that a change to STRONG_OPS cannot pass unnoticed.
TABLE_1 = {
    "ShearX": (-0.3, 0.3),
    "ShearY": (-0.3, 0.3),
    "TranslateX": (-0.3, 0.3),
    "TranslateY": (-0.3, 0.3),
    "Rotate": (-30, 30),
    "AutoContrast": None,
    "Invert": None,
    "Equalize": None,
    "Solarize": (0, 256),
    "Posterize": (4, 8),
    "Contrast": (0.05, 0.95),
    "Color": (0.05, 0.95),
    "Brightness": (0.05, 0.95),
    "Sharpness": (0.05, 0.95),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run the transforms single-threaded as in a DataLoader worker; on a busy 2-core machine torch's
    intra-op threads make a 224 crop 10-100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image():
    """A small RGB image (HWC uint8) with every grey level and non-square sides."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


def apply(name, image_hwc, magnitude):
    chw = torch.from_numpy(image_hwc).permute(2, 0, 1).contiguous()
    out = STRONG_OPS[name].apply(chw, magnitude)
    assert out.dtype == torch.uint8 and out.shape == chw.shape
    return out.permute(1, 2, 0).numpy()


def test_strong_ops_are_the_14_of_table_1_with_their_ranges():
    assert set(STRONG_OPS) == set(TABLE_1)
    for name, op in STRONG_OPS.items():
        assert (None if op.low is None else (op.low, op.high)) == TABLE_1[name], name


@pytest.mark.parametrize("threshold", [0, 1, 128, 255, 256])
def test_solarize_inverts_pixels_at_or_above_threshold(image, threshold):
    expected = np.where(image >= threshold, 255 - image, image)
    np.testing.assert_array_equal(apply("Solarize", image, threshold), expected)


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_posterize_keeps_the_top_bits(image, bits):
    expected = (image >> (8 - bits)) << (8 - bits)
    np.testing.assert_array_equal(apply("Posterize", image, bits), expected)


def test_invert_is_255_minus_x(image):
    np.testing.assert_array_equal(apply("Invert", image, None), 255 - image)


def test_autocontrast_stretches_each_channel_to_full_range():
    rng = np.random.default_rng(1)
    image = rng.integers(40, 200, size=(9, 11, 3), dtype=np.uint8)
    image[..., 2] = 77  # a flat channel has no range to stretch and stays as it is
    lo = image.min(axis=(0, 1)).astype(float)
    hi = image.max(axis=(0, 1)).astype(float)
    out = apply("AutoContrast", image, None)
    for c in range(2):
        expected = (image[..., c] - lo[c]) * 255.0 / (hi[c] - lo[c])
        assert np.abs(out[..., c] - expected).max() <= 1
        # torchvision's float32 division can land the top value at 254.99... -> 254.
        assert out[..., c].min() == 0 and out[..., c].max() >= 254
    np.testing.assert_array_equal(out[..., 2], image[..., 2])
    pil = np.asarray(ImageOps.autocontrast(Image.fromarray(image))).astype(int)
    assert np.abs(out.astype(int) - pil).max() <= 1


def test_equalize_matches_pil(image):
    low_contrast = (image // 4 + 100).astype(np.uint8)
    np.testing.assert_array_equal(
        apply("Equalize", low_contrast, None), np.asarray(ImageOps.equalize(Image.fromarray(low_contrast)))
    )


@pytest.mark.parametrize(
    "name, enhancer",
    [
        ("Brightness", ImageEnhance.Brightness),
        ("Contrast", ImageEnhance.Contrast),
        ("Color", ImageEnhance.Color),
        ("Sharpness", ImageEnhance.Sharpness),
    ],
)
@pytest.mark.parametrize("factor", [0.05, 0.5, 0.95])
def test_enhance_ops_blend_with_degenerate_image_like_pil(image, name, enhancer, factor):
    expected = np.asarray(enhancer(Image.fromarray(image)).enhance(factor)).astype(int)
    assert np.abs(apply(name, image, factor).astype(int) - expected).max() <= 1


def test_brightness_scales_towards_black(image):
    expected = np.clip(np.round(image * 0.5), 0, 255)
    assert np.abs(apply("Brightness", image, 0.5).astype(int) - expected).max() <= 1


def bright_pixel_position(name, magnitude, x, y, size=(41, 31)):
    """(x, y) of the centroid of a white 3x3 square centred on (x, y) after the op.

    A square rather than one pixel, because nearest resampling can drop a lone pixel under rotation.
    """
    image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    image[y - 1 : y + 2, x - 1 : x + 2] = 255
    ys, xs = np.nonzero(apply(name, image, magnitude)[..., 0] == 255)
    assert len(xs) > 0, f"{name}({magnitude}) lost the pixel"
    return xs.mean(), ys.mean()


@pytest.mark.parametrize(
    "name, magnitude, expected",
    [
        # Shears pivot on the top-left corner: x' = x - s*y (ShearX), y' = y - s*x (ShearY).
        ("ShearX", 0.25, (20 - 0.25 * 12, 12)),
        ("ShearX", -0.3, (20 + 0.3 * 10, 10)),
        ("ShearY", 0.2, (20, 12 - 0.2 * 20)),
        ("ShearY", -0.3, (10, 12 + 0.3 * 10)),
        # Translations are fractions of the width (41) and height (31), rounded to pixels.
        ("TranslateX", 0.3, (20 + 12, 12)),
        ("TranslateX", -0.1, (20 - 4, 12)),
        ("TranslateY", 0.2, (20, 12 + 6)),
        ("TranslateY", -0.3, (20, 12 - 9)),
    ],
)
def test_shear_and_translate_move_a_pixel_by_the_affine_formula(name, magnitude, expected):
    x, y = expected
    source = {"ShearX": (20, y), "ShearY": (x, 12)}.get(name, (20, 12))
    assert bright_pixel_position(name, magnitude, *source) == pytest.approx(expected, abs=0.5)


@pytest.mark.parametrize("degrees", [-30, -12.5, 17, 30])
def test_rotate_turns_a_pixel_counter_clockwise_about_the_centre(degrees):
    x, y, cx, cy = 31, 10, 20, 15  # (cx, cy) is the centre of a 41 x 31 image
    t = math.radians(degrees)
    # y points down, so a counter-clockwise turn on screen is this matrix in (x, y):
    expected = (
        cx + (x - cx) * math.cos(t) + (y - cy) * math.sin(t),
        cy - (x - cx) * math.sin(t) + (y - cy) * math.cos(t),
    )
    assert bright_pixel_position("Rotate", degrees, x, y) == pytest.approx(expected, abs=1.0)


@pytest.mark.parametrize(
    "name, magnitude, pil_op",
    [
        # Shears chosen so that no pixel centre maps exactly onto a pixel border, where the two
        # libraries may round a tie differently.
        ("ShearX", 0.3, lambda im: im.transform(im.size, Image.AFFINE, (1, 0.3, 0, 0, 1, 0))),
        ("ShearY", -0.23, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, -0.23, 1, 0))),
        ("TranslateX", 0.2, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, -11, 0, 1, 0))),
        ("TranslateY", -0.3, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, 11))),
        ("Rotate", -13, lambda im: im.rotate(-13)),
    ],
)
def test_geometric_ops_match_pil_on_a_random_image(image, name, magnitude, pil_op):
    expected = np.asarray(pil_op(Image.fromarray(image)))
    # Nearest resampling may break ties on the other side for a few pixels.
    assert (apply(name, image, magnitude) == expected).all(axis=-1).mean() > 0.99


def test_sampled_magnitudes_fill_table_1_ranges():
    torch.manual_seed(0)
    for name, op in STRONG_OPS.items():
        magnitudes = [op.sample_magnitude() for _ in range(2000)]
        if TABLE_1[name] is None:
            assert set(magnitudes) == {None}
            continue
        low, high = TABLE_1[name]
        assert low <= min(magnitudes) and max(magnitudes) <= high, name
        if op.integer:
            assert set(magnitudes) == set(range(low, high + 1)), name
        else:
            # The whole range is used, not the reference's narrower 1..9 grid.
            span = high - low
            assert min(magnitudes) < low + 0.01 * span and max(magnitudes) > high - 0.01 * span, name
            assert stats.kstest(magnitudes, stats.uniform(low, span).cdf).pvalue > 1e-3, name


def test_strong_augment_picks_ops_uniformly():
    torch.manual_seed(0)
    augment = StrongAugment(num_ops=5, prob=1.0)
    counts = Counter(name for _ in range(2000) for name, _ in augment.make_params([])["ops"])
    assert sum(counts.values()) == 10000
    assert stats.chisquare([counts[name] for name in STRONG_OPS]).pvalue > 1e-3


def test_strong_augment_applies_each_pick_with_probability_half():
    torch.manual_seed(0)
    augment = StrongAugment(num_ops=5, prob=0.5)
    applied = sum(len(augment.make_params([])["ops"]) for _ in range(2000))
    assert stats.binomtest(applied, 10000, 0.5).pvalue > 1e-3


def test_strong_augment_applies_its_params_in_order(image):
    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    augment = StrongAugment()
    out = augment.transform(chw, {"ops": [("Posterize", 4), ("Invert", None), ("Solarize", 200)]})
    expected = 255 - ((image >> 4) << 4)
    expected = np.where(expected >= 200, 255 - expected, expected)
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), expected)
    np.testing.assert_array_equal(augment.transform(chw, {"ops": []}), chw)


def test_strong_augment_uses_torch_rng(image):
    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    augment = StrongAugment()
    torch.manual_seed(5)
    first = [augment(chw) for _ in range(4)]
    torch.manual_seed(5)
    assert all(torch.equal(a, augment(chw)) for a in first)


def denormalise(view):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return view * std + mean


@pytest.mark.parametrize("preset", sorted(PRESET_VIEWS))
def test_preset_produces_exactly_its_views(preset):
    spec = PRESET_VIEWS[preset]
    expected_sizes = [224] + [size for size, _ in spec["weak"]] + [size for size, _ in spec["strong"]]
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (160, 240, 3), dtype=np.uint8))
    views = MultiViewTransform.from_preset(preset)(image)
    assert [tuple(v.shape) for v in views] == [(3, s, s) for s in expected_sizes]
    for view in views:
        assert view.dtype == torch.float32
        pixels = denormalise(view)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # ImageNet-normalised [0, 1] values


def test_presets_match_the_paper():
    multi = [
        (224, (0.2, 1.0)),
        (192, (0.172, 0.86)),
        (160, (0.143, 0.715)),
        (128, (0.114, 0.571)),
        (96, (0.086, 0.429)),
    ]
    assert PRESET_VIEWS["clsa_single"] == {
        "weak": [(224, (0.2, 1.0))],
        "strong": [(96, (0.086, 0.429))],
        "strong_key": False,
    }
    assert PRESET_VIEWS["clsa_multi"] == {"weak": multi, "strong": multi, "strong_key": False}
    assert PRESET_VIEWS["mocov2"] == {"weak": [(224, (0.2, 1.0))], "strong": [], "strong_key": False}
    assert PRESET_VIEWS["clsa_single_contrastive"] == PRESET_VIEWS["clsa_single"]
    assert PRESET_VIEWS["mocov2_strong_query"]["strong_key"] is False
    assert PRESET_VIEWS["mocov2_strong_query_key"]["strong_key"] is True


def contains_strong_augment(transform):
    return any(isinstance(t, StrongAugment) for t in transform.transforms)


def test_only_strong_views_and_strong_key_get_strong_augment():
    clsa = MultiViewTransform.from_preset("clsa_multi")
    assert not contains_strong_augment(clsa.key)
    assert not any(contains_strong_augment(t) for t in clsa.weak)
    assert all(contains_strong_augment(t) for t in clsa.strong)
    assert contains_strong_augment(MultiViewTransform.from_preset("mocov2_strong_query_key").key)


def test_weak_view_blur_kernel_is_odd_and_about_a_tenth_of_the_crop():
    for size, kernel in [(224, 23), (192, 19), (160, 17), (128, 13), (96, 9)]:
        blur = weak_transform(size, (0.2, 1.0)).transforms[3].transforms[0]
        assert tuple(blur.kernel_size) == (kernel, kernel)


@pytest.mark.parametrize("kernel", [3, 9, 23])
def test_matmul_blur_equals_torchvision_2d_blur(kernel):
    # Non-square; the 23 kernel is nearly as wide as the 13-pixel side, so reflect padding matters.
    image = torch.randint(0, 256, (3, 13, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    matmul = MatmulGaussianBlur(kernel, sigma=(1.0, 2.0))(image)
    torch.manual_seed(3)
    full = v2.GaussianBlur(kernel, sigma=(1.0, 2.0))(image)
    assert matmul.dtype == torch.uint8
    assert (matmul.int() - full.int()).abs().max() <= 1
    assert (matmul.int() - image.int()).abs().float().mean() > 10  # it did blur


def test_views_from_pil_and_tensor_are_identical_under_the_same_seed():
    array = np.random.default_rng(3).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    transform = MultiViewTransform.from_preset("clsa_single")
    torch.manual_seed(7)
    from_pil = transform(Image.fromarray(array))
    torch.manual_seed(7)
    from_tensor = transform(torch.from_numpy(array).permute(2, 0, 1).contiguous())
    assert all(torch.equal(a, b) for a, b in zip(from_pil, from_tensor, strict=True))


def test_strong_transform_differs_from_weak_only_by_strong_augment():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    identity_strong = strong_transform(32, (0.5, 1.0), num_ops=5, prob=0.0)
    weak = weak_transform(32, (0.5, 1.0))
    torch.manual_seed(11)
    expected = weak(image)
    torch.manual_seed(11)
    # StrongAugment draws after every weak-pipeline draw, so with prob=0 the two views coincide.
    assert torch.equal(identity_strong(image), expected)


def test_unknown_preset_names_the_choices():
    with pytest.raises(KeyError, match="clsa_single"):
        MultiViewTransform.from_preset("clsa")


def test_non_uint8_input_is_rejected():
    with pytest.raises(TypeError, match="uint8"):
        MultiViewTransform.from_preset("mocov2")(torch.rand(3, 32, 32))


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA"])
def test_non_rgb_pil_images_become_three_channel_views(mode):
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 50, 3), dtype=np.uint8)).convert(mode)
    views = MultiViewTransform(key_size=24, weak=[(16, (0.5, 1.0))])(image)
    assert [tuple(v.shape) for v in views] == [(3, 24, 24), (3, 16, 16)]
