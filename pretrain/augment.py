"""The views CLSA trains on: MoCo v2 weak views and the stronger augmentations of Table 1.

Everything works on uint8 CHW tensors with torchvision.transforms.v2 and stays uint8 until the last
step (ToDtype float32 + ImageNet Normalize), so each op runs on bytes, and the random draws come from
torch's RNG, which DataLoader seeds per worker (python `random` and numpy would repeat across workers
on some setups; see protocols.md, "Other").

A strong view is a weak-style view followed by `StrongAugment`: 5 rounds of "pick one of the 14 ops
of Table 1 uniformly, apply it with p=0.5 at a magnitude drawn uniformly from its Table 1 range".
Where the reference code (data_processing/RandAugment.py) departs from Table 1, we follow Table 1:
- the reference pool has Identity where Table 1 has Invert; we use Invert;
- the reference draws v in {1..9} (factors 0.14..0.86, shear <= 0.27, rotate <= 27 deg, posterize
  4..7 bits, solarize thresholds 26..231); we draw from the full Table 1 ranges.
Like the reference, geometric ops use nearest resampling and fill with black, shears pivot on the
top-left corner (PIL's AFFINE convention) and rotations on the image centre. The Gaussian blur has a
kernel of ~10% of the crop side (SimCLR's choice), where MoCo's PIL blur has an untruncated kernel.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from common.constants import IMAGENET_MEAN, IMAGENET_STD
from pretrain.batched_ops import gaussian_blur_matrices


def _shear_x(image, factor):
    # Input pixel (x, y) moves to (x - factor * y, y), as PIL's AFFINE (1, factor, 0, 0, 1, 0).
    return F.affine(
        image, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(factor)), 0.0], center=[0, 0]
    )


def _shear_y(image, factor):
    return F.affine(
        image, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(factor))], center=[0, 0]
    )


def _translate_x(image, fraction):
    # A fraction of the width, rounded to whole pixels so nearest resampling moves pixels intact.
    return F.affine(image, angle=0.0, translate=[round(fraction * image.shape[-1]), 0], scale=1.0, shear=[0.0, 0.0])


def _translate_y(image, fraction):
    return F.affine(image, angle=0.0, translate=[0, round(fraction * image.shape[-2])], scale=1.0, shear=[0.0, 0.0])


def _rotate(image, degrees):
    # Positive angles turn counter-clockwise about the centre, like PIL's Image.rotate.
    return F.rotate(image, degrees)


def _solarize(image, threshold):
    # Pixels >= threshold are inverted; threshold 256 (Table 1's top) inverts nothing, which
    # torchvision's uint8 kernel rejects instead of treating as a no-op.
    return image if threshold > 255 else F.solarize(image, threshold)


@dataclass(frozen=True)
class StrongOp:
    """One op of Table 1: `apply(image, magnitude)` with magnitude ~ U[low, high].

    `low`/`high` are None for ops with no magnitude (Table 1's "0 or 1": on or off, decided by the
    p=0.5 draw). Integer ops draw uniformly from the integers low..high inclusive.
    """

    name: str
    apply: Callable[[torch.Tensor, float | None], torch.Tensor]
    low: float | None = None
    high: float | None = None
    integer: bool = False

    def sample_magnitude(self):
        if self.low is None:
            return None
        if self.integer:
            return int(torch.randint(int(self.low), int(self.high) + 1, ()).item())
        return float(torch.empty(()).uniform_(self.low, self.high).item())


STRONG_OPS = {
    op.name: op
    for op in (
        StrongOp("ShearX", _shear_x, -0.3, 0.3),
        StrongOp("ShearY", _shear_y, -0.3, 0.3),
        StrongOp("TranslateX", _translate_x, -0.3, 0.3),
        StrongOp("TranslateY", _translate_y, -0.3, 0.3),
        StrongOp("Rotate", _rotate, -30.0, 30.0),
        StrongOp("AutoContrast", lambda image, _: F.autocontrast(image)),
        StrongOp("Invert", lambda image, _: F.invert(image)),
        StrongOp("Equalize", lambda image, _: F.equalize(image)),
        StrongOp("Solarize", _solarize, 0, 256, integer=True),
        StrongOp("Posterize", lambda image, bits: F.posterize(image, bits), 4, 8, integer=True),
        # Enhancement factors as in PIL.ImageEnhance: 1 is the identity, 0 the degenerate image.
        StrongOp("Contrast", lambda image, factor: F.adjust_contrast(image, factor), 0.05, 0.95),
        StrongOp("Color", lambda image, factor: F.adjust_saturation(image, factor), 0.05, 0.95),
        StrongOp("Brightness", lambda image, factor: F.adjust_brightness(image, factor), 0.05, 0.95),
        StrongOp("Sharpness", lambda image, factor: F.adjust_sharpness(image, factor), 0.05, 0.95),
    )
}


class StrongAugment(v2.Transform):
    """CLSA's stronger augmentation (paper section 3.3, Table 1) on uint8 images.

    Args:
        num_ops (int): rounds of "pick one of STRONG_OPS uniformly, apply it with probability
            `prob`"; ops are drawn with replacement. Default 5.
        prob (float): probability that a picked op is applied. Default 0.5.

    `make_params([])` draws the ops for one image as {"ops": [(name, magnitude), ...]} (only the
    applied ones, in order) and `transform(image, params)` applies them, so the two can be checked
    separately.
    """

    def __init__(self, num_ops=5, prob=0.5):
        super().__init__()
        if num_ops < 0 or not 0.0 <= prob <= 1.0:
            raise ValueError(f"StrongAugment needs num_ops >= 0 and 0 <= prob <= 1, got {num_ops}, {prob}")
        self.num_ops = num_ops
        self.prob = prob
        self._ops = tuple(STRONG_OPS.values())

    def make_params(self, flat_inputs):
        picks = torch.randint(len(self._ops), (self.num_ops,)).tolist()
        applied = (torch.rand(self.num_ops) < self.prob).tolist()
        return {
            "ops": [(self._ops[i].name, self._ops[i].sample_magnitude()) for i, keep in zip(picks, applied) if keep]
        }

    def transform(self, inpt, params):
        for name, magnitude in params["ops"]:
            inpt = STRONG_OPS[name].apply(inpt, magnitude)
        return inpt

    def extra_repr(self):
        return f"num_ops={self.num_ops}, prob={self.prob}"


class MatmulGaussianBlur(v2.GaussianBlur):
    """v2.GaussianBlur (same sigma draw, same result within 1 grey level) computed as M_h^T @ x @ M_w.

    torch's depthwise 2-D convolution is slow on the CPU: for the 23-pixel kernel of a 224 crop it
    took more time than the rest of the view. Two small matrix products are 11x faster there and 3x
    on 96 crops (benchmarks.md).
    """

    def transform(self, inpt, params):
        kernel_x, kernel_y = self.kernel_size
        sigma_x, sigma_y = params["sigma"]
        height, width = inpt.shape[-2:]
        blur_rows = gaussian_blur_matrices(height, kernel_y, torch.tensor([sigma_y]))[0]
        blur_columns = gaussian_blur_matrices(width, kernel_x, torch.tensor([sigma_x]))[0]
        out = blur_rows.T @ inpt.to(torch.float32) @ blur_columns
        return out if inpt.is_floating_point() else out.round_().to(inpt.dtype)


def blur_kernel_size(size):
    """About 10% of the crop side, odd (SimCLR's choice; MoCo's PIL blur has no kernel size)."""
    return int(0.1 * size) // 2 * 2 + 1


def _view_transform(size, scale, strong=None):
    steps = [
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([MatmulGaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=0.5),
        v2.RandomHorizontalFlip(),
    ]
    if strong is not None:
        steps.append(strong)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def weak_transform(size, scale):
    """MoCo v2's "aug_plus" view of a uint8 CHW image, as a normalised float32 CHW tensor."""
    return _view_transform(size, scale)


def strong_transform(size, scale, num_ops=5, prob=0.5):
    """A weak-style view with `StrongAugment(num_ops, prob)` applied before normalisation."""
    return _view_transform(size, scale, StrongAugment(num_ops, prob))


# Views per image besides the key: lists of (crop size, (min scale, max scale)); `strong_key` makes
# the key a strong view too. Each crop is drawn independently of the others.
_MULTI_CROPS = (
    (224, (0.2, 1.0)),
    (192, (0.172, 0.86)),
    (160, (0.143, 0.715)),
    (128, (0.114, 0.571)),
    (96, (0.086, 0.429)),
)
PRESET_VIEWS = {
    "mocov2": {"weak": [(224, (0.2, 1.0))], "strong": [], "strong_key": False},
    "clsa_single": {"weak": [(224, (0.2, 1.0))], "strong": [(96, (0.086, 0.429))], "strong_key": False},
    "clsa_multi": {"weak": list(_MULTI_CROPS), "strong": list(_MULTI_CROPS), "strong_key": False},
    # Table 4 ablations. The strong query is the model's contrastive query.
    "mocov2_strong_query": {"weak": [], "strong": [(224, (0.2, 1.0))], "strong_key": False},
    "mocov2_strong_query_key": {"weak": [], "strong": [(224, (0.2, 1.0))], "strong_key": True},
    "clsa_single_contrastive": {"weak": [(224, (0.2, 1.0))], "strong": [(96, (0.086, 0.429))], "strong_key": False},
}


class MultiViewTransform:
    """Image -> [key, *weak_views, *strong_views], exactly the views the model uses.

    Args:
        key_size, key_scale: the key's crop, (224, (0.2, 1.0)) as in MoCo v2.
        weak, strong: lists of (size, (min_scale, max_scale)), one entry per view.
        num_ops, prob: StrongAugment's rounds and per-round probability (5, 0.5).
        strong_key (bool): make the key a strong view (Table 4 ablation). Default False.

    Accepts a PIL image or a uint8 CHW tensor; the image is converted to a tensor once and every
    view is cropped from it independently.
    """

    def __init__(self, key_size=224, key_scale=(0.2, 1.0), weak=(), strong=(), num_ops=5, prob=0.5, strong_key=False):
        make_key = strong_transform if strong_key else weak_transform
        key_args = (num_ops, prob) if strong_key else ()
        self.key = make_key(key_size, tuple(key_scale), *key_args)
        self.weak = [weak_transform(size, tuple(scale)) for size, scale in weak]
        self.strong = [strong_transform(size, tuple(scale), num_ops, prob) for size, scale in strong]

    @classmethod
    def from_preset(cls, name, **kwargs):
        if name not in PRESET_VIEWS:
            raise KeyError(f"Unknown view preset {name!r}; choose one of {sorted(PRESET_VIEWS)}")
        return cls(**{**PRESET_VIEWS[name], **kwargs})

    def __call__(self, image):
        if isinstance(image, Image.Image):
            image = F.pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise TypeError(
                f"MultiViewTransform expects a PIL image or a uint8 CHW tensor, got "
                f"{image.dtype} of shape {tuple(image.shape)}"
            )
        return [self.key(image)] + [t(image) for t in self.weak] + [t(image) for t in self.strong]

    def __repr__(self):
        return f"{type(self).__name__}(key={self.key}, weak={len(self.weak)} views, strong={len(self.strong)} views)"
