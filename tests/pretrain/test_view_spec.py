"""The view specification: Table 1, MoCo v2's weak stage, the presets' views and their checks."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pretrain.config import get_cfg
from pretrain.views import batched_ops, cpu_ops
from pretrain.views.spec import (
    JITTER_OPS,
    KERNEL_LEVELS,
    STRONG_OPS,
    WEAK_STAGE,
    ViewSet,
    ViewSpec,
    affine_matrices,
    blur_kernel_size,
)

CONFIGS = Path(__file__).resolve().parents[2] / "pretrain" / "configs"

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
MULTI_CROPS = [[224, 0.2, 1.0], [192, 0.172, 0.86], [160, 0.143, 0.715], [128, 0.114, 0.571], [96, 0.086, 0.429]]


def test_strong_ops_are_the_14_of_table_1_with_their_ranges():
    assert [op.name for op in STRONG_OPS] == list(TABLE_1)
    for op in STRONG_OPS:
        assert (None if op.low is None else (op.low, op.high)) == TABLE_1[op.name], op.name
    assert {op.name for op in STRONG_OPS if op.geometric} == {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
    assert {op.name for op in STRONG_OPS if op.integer} == {"Solarize", "Posterize"}


def test_every_op_names_a_kernel_that_both_kernel_modules_define():
    kernels = {*JITTER_OPS, "grayscale", "gaussian_blur", "hflip", *(op.kernel for op in STRONG_OPS)}
    assert kernels == set(KERNEL_LEVELS)
    for kernel in kernels:
        assert callable(getattr(cpu_ops, kernel)) and callable(getattr(batched_ops, kernel)), kernel


def test_weak_stage_is_moco_v2_aug_plus():
    # ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, RandomGrayscale p 0.2, blur sigma 0.1-2 p 0.5, flip.
    assert WEAK_STAGE.jitter_prob == 0.8 and WEAK_STAGE.grayscale_prob == 0.2
    assert WEAK_STAGE.jitter_low == (0.6, 0.6, 0.6, -0.1) and WEAK_STAGE.jitter_high == (1.4, 1.4, 1.4, 0.1)
    assert WEAK_STAGE.blur_prob == 0.5 and WEAK_STAGE.blur_sigma == (0.1, 2.0) and WEAK_STAGE.flip_prob == 0.5
    assert WEAK_STAGE.crop_ratio == (3 / 4, 4 / 3) and WEAK_STAGE.crop_attempts == 10


def test_blur_kernel_is_odd_and_about_a_tenth_of_the_crop():
    assert [blur_kernel_size(size) for size in (224, 192, 160, 128, 96, 64, 32)] == [23, 19, 17, 13, 9, 7, 3]


def preset(name):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    return cfg


def as_lists(views):
    return [[v.size, *v.scale] for v in views]


@pytest.mark.parametrize(
    "name, weak, strong, strong_key",
    [
        ("clsa_single", [[224, 0.2, 1.0]], [[96, 0.086, 0.429]], False),
        ("clsa_single_contrastive", [[224, 0.2, 1.0]], [[96, 0.086, 0.429]], False),
        ("clsa_multi", MULTI_CROPS, MULTI_CROPS, False),
        ("mocov2", [[224, 0.2, 1.0]], [], False),
        ("mocov2_strong_query", [], [[224, 0.2, 1.0]], False),
        ("mocov2_strong_query_key", [], [[224, 0.2, 1.0]], True),
    ],
)
def test_presets_state_the_papers_views(name, weak, strong, strong_key):
    views = ViewSet.from_cfg(preset(name)).views
    assert views.key == ViewSpec(224, (0.2, 1.0), strong_key)
    assert as_lists(views.weak) == weak and as_lists(views.strong) == strong
    assert not any(v.strong for v in views.weak) and all(v.strong for v in views.strong)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_states_its_views_in_its_own_file_or_its_base(path):
    """A reader finds every view number in the preset's YAML chain, none only in a Python default."""
    stated, current = set(), path
    while current:
        text = yaml.safe_load(current.read_text())
        stated |= set(text.get("DATA", {}))
        current = current.parent / text["_BASE_"] if "_BASE_" in text else None
    assert {"KEY_VIEW", "WEAK_VIEWS", "STRONG_VIEWS", "STRONG_KEY"} <= stated


@pytest.mark.parametrize(
    "key, value",
    [
        ("DATA.KEY_VIEW", [224, 0.2]),
        ("DATA.KEY_VIEW", [224, 0.0, 1.0]),
        ("DATA.WEAK_VIEWS", [[224, 0.5, 0.2]]),
        ("DATA.STRONG_VIEWS", [[96.5, 0.1, 0.4]]),
        ("DATA.STRONG_VIEWS", [[0, 0.1, 0.4]]),
        ("DATA.WEAK_VIEWS", [[224, 0.2, 1.5]]),
        ("DATA.STRONG_VIEWS", [96, 0.1, 0.4]),
    ],
)
def test_a_malformed_view_is_named_with_the_expected_form(key, value):
    cfg = get_cfg()
    cfg.merge_from_list([key, str(value)])
    with pytest.raises(ValueError, match=r"DATA\.\w+_VIEWS?(\[\d\])? is .* \[size, min scale, max scale\]"):
        ViewSet.from_cfg(cfg)


def test_strong_stage_rounds_and_probability_are_checked():
    cfg = get_cfg()
    cfg.DATA.STRONG_PROB = 1.5
    with pytest.raises(ValueError, match="DATA.STRONG_PROB"):
        ViewSet.from_cfg(cfg)


def warp(name, magnitude, image):
    """image (H x W x 3 uint8) through one geometric op, by the batched kernel."""
    height, width = image.shape[:2]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    out = batched_ops.affine(x, torch.from_numpy(affine_matrices([name], [magnitude], height, width)))
    return out[0].permute(1, 2, 0).round().to(torch.uint8).numpy()


def bright_square_position(name, magnitude, x, y, size=(41, 31)):
    """(x, y) of the centroid of a white 3x3 square centred on (x, y) after the op.

    A square rather than one pixel, because nearest resampling can drop a lone pixel under rotation.
    """
    image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    image[y - 1 : y + 2, x - 1 : x + 2] = 255
    ys, xs = np.nonzero(warp(name, magnitude, image)[..., 0] == 255)
    assert len(xs) > 0, f"{name}({magnitude}) lost the square"
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
    assert bright_square_position(name, magnitude, *source) == pytest.approx(expected, abs=0.5)


@pytest.mark.parametrize("degrees", [-30, -12.5, 17, 30])
def test_rotate_turns_a_pixel_counter_clockwise_about_the_centre(degrees):
    x, y, cx, cy = 31, 10, 20, 15  # (cx, cy) is the centre of a 41 x 31 image
    t = math.radians(degrees)
    # y points down, so a counter-clockwise turn on screen is this matrix in (x, y):
    expected = (
        cx + (x - cx) * math.cos(t) + (y - cy) * math.sin(t),
        cy - (x - cx) * math.sin(t) + (y - cy) * math.cos(t),
    )
    assert bright_square_position("Rotate", degrees, x, y) == pytest.approx(expected, abs=1.0)


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
def test_geometric_ops_match_the_reference_codes_pil_ops(name, magnitude, pil_op):
    image = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    expected = np.asarray(pil_op(Image.fromarray(image)))
    # Nearest resampling may break ties on the other side for a few pixels.
    assert (warp(name, magnitude, image) == expected).all(axis=-1).mean() > 0.99


def one_matrix(name, value, height, width):
    """One image's matrix, written out op by op (independently of the vectorised affine_matrices)."""
    out = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if name == "ShearX":
        out[0, 1], out[0, 2] = value, value * height / 2
    elif name == "ShearY":
        out[1, 0], out[1, 2] = value, value * width / 2
    elif name == "TranslateX":
        out[0, 2] = -np.round(value * width)
    elif name == "TranslateY":
        out[1, 2] = -np.round(value * height)
    else:
        cos, sin = np.cos(np.deg2rad(value)), np.sin(np.deg2rad(value))
        out[:, :2] = ((cos, -sin), (sin, cos))
    return out


def test_affine_matrices_of_a_batch_are_each_images_own():
    names = ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"]
    by_hand = np.array(
        [
            [[1, 0.2, 1.0], [0, 1, 0]],  # shear 0.2 pivoting on the top edge: 0.2 * 10 / 2
            [[1, 0, 0], [-0.1, 1, -1.0]],  # -0.1 * 20 / 2
            [[1, 0, -5], [0, 1, 0]],  # 0.26 * 20 = 5.2 pixels, rounded
            [[1, 0, 0], [0, 1, 2]],  # -0.25 * 10 = -2.5, rounded half to even
            [[np.sqrt(3) / 2, -0.5, 0], [0.5, np.sqrt(3) / 2, 0]],
        ]
    )
    np.testing.assert_allclose(affine_matrices(names, [0.2, -0.1, 0.26, -0.25, 30.0], 10, 20), by_hand, atol=1e-15)
    rng = np.random.default_rng(0)
    many = rng.choice(names, 300)
    values = np.where(many == "Rotate", rng.uniform(-30, 30, 300), rng.uniform(-0.3, 0.3, 300))
    expected = np.stack([one_matrix(name, value, 17, 23) for name, value in zip(many, values)])
    assert np.array_equal(affine_matrices(many, values, 17, 23), expected)
    assert affine_matrices([], [], 17, 23).shape == (0, 2, 3)


def test_only_geometric_ops_have_matrices():
    with pytest.raises(ValueError, match="not a geometric op"):
        affine_matrices(["Invert"], [0.0], 10, 10)
