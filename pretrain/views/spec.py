"""What a pretraining view is, defined once: the views of a run, MoCo v2's weak stage and Table 1's strong ops.

A run's views (sizes and crop scales) come from its config (`ViewSet.from_cfg`); the stages every view
goes through are fixed by the papers and written here only. The sampler (pretrain/views/sampler.py)
draws from these definitions, and both executors run the steps that `plan` makes of its draws with
kernels of the same names (KERNEL_LEVELS), so a number or an op changed here changes both paths.

Weak stage, MoCo v2's "aug_plus" in the order torchvision composes it: RandomResizedCrop, ColorJitter
(brightness, contrast, saturation 0.4, hue 0.1, its four adjustments in a random order per image)
with p 0.8, grayscale with p 0.2, Gaussian blur with sigma ~ U(0.1, 2) with p 0.5, horizontal flip
with p 0.5. The blur kernel is about 10% of the crop side (SimCLR's choice; MoCo's PIL blur has no
kernel size).

Strong stage (paper section 3.3, Table 1): a weak view followed by `num_ops` rounds of "pick one of
the 14 ops uniformly, apply it with probability `prob` at a magnitude ~ U(Table 1 range)". Where the
reference code (data_processing/RandAugment.py) departs from Table 1, we follow Table 1: Invert where
the reference pool has Identity, and the full ranges where the reference draws v in {1..9}. As in the
reference, geometric ops sample the nearest pixel and fill with black, shears pivot on the top-left
corner (PIL's AFFINE convention) and rotations on the image centre.
"""

from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import numpy as np
import torch

from common.constants import IMAGENET_MEAN, IMAGENET_STD

T = TypeVar("T")


class Views(NamedTuple, Generic[T]):
    """Anything held per view: the key, the weak queries and the strong queries, by role."""

    key: T
    weak: list[T]
    strong: list[T]

    def flat(self):
        return [self.key, *self.weak, *self.strong]

    def map(self, fn):
        """fn applied to each view, by role."""
        return Views(fn(self.key), [fn(v) for v in self.weak], [fn(v) for v in self.strong])

    @classmethod
    def from_flat(cls, items, num_weak):
        """The inverse of `flat` for a set of `num_weak` weak views."""
        return cls(items[0], list(items[1 : 1 + num_weak]), list(items[1 + num_weak :]))


@dataclass(frozen=True)
class WeakStage:
    crop_ratio: tuple = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range
    crop_attempts: int = 10  # draws before RandomResizedCrop falls back to a central crop
    jitter_prob: float = 0.8
    # ColorJitter(0.4, 0.4, 0.4, 0.1) as factor ranges (hue: a shift in turns), in ColorJitter's op
    # order: brightness, contrast, saturation, hue.
    jitter_low: tuple = (0.6, 0.6, 0.6, -0.1)
    jitter_high: tuple = (1.4, 1.4, 1.4, 0.1)
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple = (0.1, 2.0)
    flip_prob: float = 0.5


WEAK_STAGE = WeakStage()
# ColorJitter's adjustments in its op order, by kernel (KERNEL_LEVELS).
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def blur_kernel_size(size):
    """About 10% of the crop side, odd."""
    return int(0.1 * size) // 2 * 2 + 1


# The kernels both executors run after a view's crop, each defined under this name in
# pretrain/views/cpu_ops.py (uint8 H x W x 3, one image) and pretrain/views/batched_ops.py (float in [0, 1],
# N x 3 x H x W), and how v2's uint8 kernel of it returns to grey levels, which the batched executor
# repeats after the op: "truncate" (blends, grayscale, autocontrast), "round" (blurs, equalize, posterize),
# "hue" (back from HSV as v2's to_dtype: x * 255.999, truncated) or "exact" (grey levels to grey levels).
KERNEL_LEVELS = {
    **dict.fromkeys(("brightness", "contrast", "saturation", "grayscale", "autocontrast", "sharpness"), "truncate"),
    **dict.fromkeys(("gaussian_blur", "equalize", "posterize"), "round"),
    "hue": "hue",
    **dict.fromkeys(("hflip", "affine", "invert", "solarize"), "exact"),
}


@dataclass(frozen=True)
class StrongOp:
    """One op of Table 1, run by `kernel` (of KERNEL_LEVELS). `low`/`high` are None for ops without a
    magnitude (Table 1's "0 or 1": on or off, decided by the round's `prob` draw). Integer ops draw
    uniformly from the integers low..high. The geometric ops are warps by `affine_matrices`."""

    name: str
    kernel: str
    low: float | None = None
    high: float | None = None
    integer: bool = False

    @property
    def geometric(self):
        return self.kernel == "affine"


# Table 1 in the paper's order; an op's position is its id in the sampler's records.
STRONG_OPS = (
    StrongOp("ShearX", "affine", -0.3, 0.3),
    StrongOp("ShearY", "affine", -0.3, 0.3),
    StrongOp("TranslateX", "affine", -0.3, 0.3),
    StrongOp("TranslateY", "affine", -0.3, 0.3),
    StrongOp("Rotate", "affine", -30.0, 30.0),
    StrongOp("AutoContrast", "autocontrast"),
    StrongOp("Invert", "invert"),
    StrongOp("Equalize", "equalize"),
    StrongOp("Solarize", "solarize", 0, 256, integer=True),  # threshold in grey levels; 256 inverts nothing
    StrongOp("Posterize", "posterize", 4, 8, integer=True),  # bits kept
    # Enhancement factors as in PIL.ImageEnhance: 1 is the identity, 0 the degenerate image.
    StrongOp("Contrast", "contrast", 0.05, 0.95),
    StrongOp("Color", "saturation", 0.05, 0.95),
    StrongOp("Brightness", "brightness", 0.05, 0.95),
    StrongOp("Sharpness", "sharpness", 0.05, 0.95),
)
_NAMES = np.array([op.name for op in STRONG_OPS])
_GEOMETRIC = np.array([op.geometric for op in STRONG_OPS])


def affine_matrices(names, magnitudes, height, width):
    """The inverse matrices (N x 2 x 3, float64) of Table 1's geometric ops on a height x width image.

    A matrix maps an output pixel to the input pixel it reads, both relative to the image centre (x
    right, y down), v2.functional.affine's convention. Shears pivot on the top-left corner, rotations
    (degrees, counter-clockwise) on the centre; translations are fractions of the side, rounded to
    whole pixels so that nearest sampling moves pixels intact. `names` and `magnitudes` hold one
    entry per image.
    """
    names, m = np.asarray(names), np.asarray(magnitudes, dtype=np.float64)
    unknown = ~np.isin(names, _NAMES[_GEOMETRIC])
    if unknown.any():
        raise ValueError(f"{str(names[unknown][0])!r} is not a geometric op of Table 1")
    out = np.zeros((len(m), 2, 3))
    out[:, 0, 0] = out[:, 1, 1] = 1.0
    shear_x, shear_y = names == "ShearX", names == "ShearY"
    out[shear_x, 0, 1], out[shear_x, 0, 2] = m[shear_x], m[shear_x] * height / 2  # x + s (y + h/2): the top edge stays
    out[shear_y, 1, 0], out[shear_y, 1, 2] = m[shear_y], m[shear_y] * width / 2
    translate_x, translate_y = names == "TranslateX", names == "TranslateY"
    out[translate_x, 0, 2] = -np.round(m[translate_x] * width)
    out[translate_y, 1, 2] = -np.round(m[translate_y] * height)
    rotate = names == "Rotate"
    cos, sin = np.cos(np.deg2rad(m[rotate])), np.sin(np.deg2rad(m[rotate]))
    out[rotate, 0, 0], out[rotate, 0, 1], out[rotate, 1, 0], out[rotate, 1, 1] = cos, -sin, sin, cos
    return out


class Step(NamedTuple):
    """One op of a view for N images: images[rows] = kernel(images[rows], *args), where each array in
    `args` holds one row per image and anything else is the same for every image."""

    kernel: str  # a key of KERNEL_LEVELS
    rows: np.ndarray  # N bools: the images that drew the op
    args: tuple


def plan(view, p):
    """The ops of `view` after its crop, in order, for the records `p` (ViewParams of N images): MoCo v2's
    colour jitter (in each image's order), grayscale, blur and flip, then for a strong view its rounds of
    Table 1 ops, the geometric ones of a round as one warp. Both executors run these steps; a jitter or
    Table 1 op that no image drew has none (the per-image executor walks a plan per view and image)."""
    # N x step x op: whether the image's jitter runs op at that step.
    jittered = p.jitter[:, None, None] & (p.jitter_order[:, :, None] == np.arange(len(JITTER_OPS)))
    for step, op_index in np.argwhere(jittered.any(axis=0)).tolist():
        yield Step(JITTER_OPS[op_index], jittered[:, step, op_index], (p.jitter_factors[:, op_index],))
    yield Step("grayscale", p.grayscale, ())
    yield Step("gaussian_blur", p.blur, (blur_kernel_size(view.size), p.blur_sigma))
    yield Step("hflip", p.flip, ())
    if not view.strong:
        return
    # N x round x op: whether the image applies op in that round.
    picked = p.strong_applied[:, :, None] & (p.strong_ops[:, :, None] == np.arange(len(STRONG_OPS)))
    warped = picked[:, :, _GEOMETRIC].any(axis=2)
    warped_round = None
    for round_, index in np.argwhere(picked.any(axis=0)).tolist():  # by round, then in STRONG_OPS' order
        op, magnitudes = STRONG_OPS[index], p.strong_magnitudes[:, round_]
        if not op.geometric:
            yield Step(op.kernel, picked[:, round_, index], () if op.low is None else (magnitudes,))
        elif round_ != warped_round:  # the round's first geometric op: one warp for all of them
            warped_round, rows = round_, warped[:, round_]
            matrices = np.zeros((len(rows), 2, 3))
            picks = p.strong_ops[rows, round_]
            matrices[rows] = affine_matrices(_NAMES[picks], magnitudes[rows], view.size, view.size)
            yield Step("affine", rows, (matrices,))


class Executor:
    """What the two executors of `plan` (pretrain/views/per_image.py, pretrain/views/batched.py) share: the
    run's ViewSet and how they print."""

    def __init__(self, view_set):
        self.view_set = view_set

    def __repr__(self):
        views = ", ".join(f"{v.size} strong" if v.strong else str(v.size) for v in self.view_set.views.flat())
        return f"{type(self).__name__}({views}; num_ops={self.view_set.num_ops}, prob={self.view_set.prob})"


def normalize(images, dtype=torch.float32, memory_format=torch.contiguous_format):
    """Float N x 3 x H x W images in [0, 1] as the model takes them: normalised with ImageNet's mean and
    std, in `dtype` and `memory_format`."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).to(images.device, non_blocking=True)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1).to(images.device, non_blocking=True)
    return ((images - mean) / std).to(dtype=dtype, memory_format=memory_format)


@dataclass(frozen=True)
class ViewSpec:
    """One view: a RandomResizedCrop to size x size from `scale` of the image area, the weak stage,
    and the strong stage if `strong`."""

    size: int
    scale: tuple
    strong: bool = False


@dataclass(frozen=True)
class ViewSet:
    """Every view a run makes of each image, and the strong stage's rounds."""

    views: Views  # of ViewSpec
    num_ops: int = 5
    prob: float = 0.5
    weak_stage: WeakStage = WEAK_STAGE

    @classmethod
    def from_cfg(cls, cfg):
        """The views of DATA.KEY_VIEW, DATA.WEAK_VIEWS and DATA.STRONG_VIEWS ([size, min scale, max
        scale] each), DATA.STRONG_KEY, DATA.STRONG_NUM_OPS and DATA.STRONG_PROB, and the weak stage's
        colour of DATA.COLOR_JITTER, DATA.COLOR_JITTER_PROB and DATA.GRAYSCALE_PROB."""
        data = cfg.DATA
        if data.STRONG_NUM_OPS < 0 or not 0.0 <= data.STRONG_PROB <= 1.0:
            raise ValueError(
                f"DATA.STRONG_NUM_OPS ({data.STRONG_NUM_OPS}) must be at least 0 and DATA.STRONG_PROB "
                f"({data.STRONG_PROB}) between 0 and 1"
            )
        views = Views(
            _view_spec("DATA.KEY_VIEW", data.KEY_VIEW, data.STRONG_KEY),
            [_view_spec(f"DATA.WEAK_VIEWS[{i}]", view, False) for i, view in enumerate(data.WEAK_VIEWS)],
            [_view_spec(f"DATA.STRONG_VIEWS[{i}]", view, True) for i, view in enumerate(data.STRONG_VIEWS)],
        )
        return cls(views, data.STRONG_NUM_OPS, data.STRONG_PROB, _weak_stage(data))


def _weak_stage(data):
    """MoCo v2's weak stage with the colour of DATA.COLOR_JITTER, COLOR_JITTER_PROB and GRAYSCALE_PROB."""
    try:
        *strengths, hue = (float(value) for value in data.COLOR_JITTER)
        valid = len(strengths) == 3 and min(strengths) >= 0.0 and 0.0 <= hue <= 0.5
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            f"DATA.COLOR_JITTER is {data.COLOR_JITTER!r}; it must be [brightness, contrast, saturation, hue] "
            f"strengths with the first three at least 0 and hue in [0, 0.5], e.g. [0.4, 0.4, 0.4, 0.1]"
        )
    return WeakStage(
        jitter_prob=float(data.COLOR_JITTER_PROB),
        jitter_low=(*(max(0.0, 1.0 - s) for s in strengths), -hue),
        jitter_high=(*(1.0 + s for s in strengths), hue),
        grayscale_prob=float(data.GRAYSCALE_PROB),
    )


def _view_spec(key, value, strong):
    try:
        size, low, high = value
        valid = int(size) == size > 0 and 0.0 < low <= high <= 1.0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            f"{key} is {list(value) if isinstance(value, (list, tuple)) else value!r}; it must be [size, min scale, "
            f"max scale] with size > 0 and 0 < min scale <= max scale <= 1, e.g. [224, 0.2, 1.0]"
        )
    return ViewSpec(int(size), (float(low), float(high)), strong)
