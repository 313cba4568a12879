"""The reference systems' per-image view pipelines, rebuilt for timing only.

Each builds the same views with the same ops, the same libraries (torchvision.transforms v1 and PIL on
PIL images) and the same view counts as the reference training scripts, so that benchmarks compare
our pipeline with what those scripts run. They are not used for training. Sources: the official CLSA
code and MoCo v2's:
- CLSA's data_processing/Multi_FixTransform.py and its training script's arguments: the key, weak and
  strong views and the Single and Multi crops;
- CLSA's data_processing/RandAugment.py (FixMatch's "MC" variant): the strong views' RandAugment;
- MoCo v2's aug_plus: the key view, which MoCo v2 itself uses for both its views.

Random draws come from torch's RNG inside the torchvision transforms and from python's `random`
elsewhere, as in the reference code; its one numpy draw, the level np.random.randint(1, m), is drawn
here as random.randint(1, m - 1), the same distribution.
"""

import random
from collections.abc import Callable
from typing import NamedTuple

from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torchvision import transforms as v1

from common.constants import IMAGENET_MEAN, IMAGENET_STD

# The reference's RandAugment scales a level v in 1..m-1 by max_v / 10 (its PARAMETER_MAX).
_LEVEL_SCALE = 10


def _random_sign(magnitude):
    # The reference flips the geometric ops' direction with p=0.5.
    return -magnitude if random.random() < 0.5 else magnitude


def _shear_x(image, shear):
    return image.transform(image.size, Image.AFFINE, (1, _random_sign(shear), 0, 0, 1, 0))


def _shear_y(image, shear):
    return image.transform(image.size, Image.AFFINE, (1, 0, 0, _random_sign(shear), 1, 0))


def _translate_x(image, fraction):
    pixels = int(_random_sign(fraction) * image.size[0])
    return image.transform(image.size, Image.AFFINE, (1, 0, pixels, 0, 1, 0))


def _translate_y(image, fraction):
    pixels = int(_random_sign(fraction) * image.size[1])
    return image.transform(image.size, Image.AFFINE, (1, 0, 0, 0, 1, pixels))


def _rotate(image, degrees):
    return image.rotate(_random_sign(degrees))


def _enhance(enhancer):
    return lambda image, factor: enhancer(image).enhance(factor)


def _factor(v):
    # 0.14..0.86 for v in 1..9: the reference only ever weakens brightness, colour, contrast, sharpness.
    return v * 0.9 / _LEVEL_SCALE + 0.05


def _fraction(v):
    return v * 0.3 / _LEVEL_SCALE


class RandAugmentOp(NamedTuple):
    """`apply(image, magnitude(v))` for a level v in 1..9; `magnitude` is None for ops without one."""

    apply: Callable
    magnitude: Callable[[int], float] | None


RANDAUGMENT_OPS = {
    "AutoContrast": RandAugmentOp(lambda image, _: ImageOps.autocontrast(image), None),
    "Brightness": RandAugmentOp(_enhance(ImageEnhance.Brightness), _factor),
    "Color": RandAugmentOp(_enhance(ImageEnhance.Color), _factor),
    "Contrast": RandAugmentOp(_enhance(ImageEnhance.Contrast), _factor),
    "Equalize": RandAugmentOp(lambda image, _: ImageOps.equalize(image), None),
    "Identity": RandAugmentOp(lambda image, _: image, None),
    "Posterize": RandAugmentOp(ImageOps.posterize, lambda v: int(v * 4 / _LEVEL_SCALE) + 4),
    "Rotate": RandAugmentOp(_rotate, lambda v: int(v * 30 / _LEVEL_SCALE)),
    "Sharpness": RandAugmentOp(_enhance(ImageEnhance.Sharpness), _factor),
    "ShearX": RandAugmentOp(_shear_x, _fraction),
    "ShearY": RandAugmentOp(_shear_y, _fraction),
    "Solarize": RandAugmentOp(ImageOps.solarize, lambda v: 256 - int(v * 256 / _LEVEL_SCALE)),
    "TranslateX": RandAugmentOp(_translate_x, _fraction),
    "TranslateY": RandAugmentOp(_translate_y, _fraction),
}


class RandAugmentMC:
    """FixMatch's RandAugmentMC as CLSA's RandAugment.py uses it (no Cutout), on PIL images.

    Args:
        n (int): ops drawn with replacement from RANDAUGMENT_OPS, each applied with p=0.5. Default 5.
        m (int): levels are drawn from 1..m-1. Default 10.
    """

    def __init__(self, n=5, m=10):
        self.n = n
        self.m = m
        self._ops = tuple(RANDAUGMENT_OPS.values())

    def __call__(self, image):
        for op in random.choices(self._ops, k=self.n):
            v = random.randint(1, self.m - 1)
            if random.random() < 0.5:
                image = op.apply(image, op.magnitude(v) if op.magnitude else None)
        return image


def _moco_blur(image):
    # MoCo's loader.GaussianBlur: PIL's untruncated blur with sigma ~ U(0.1, 2.0).
    return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def _view(size, scale, strong=None):
    steps = [
        v1.RandomResizedCrop(size, scale=scale),
        v1.RandomApply([v1.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v1.RandomGrayscale(p=0.2),
        v1.RandomApply([_moco_blur], p=0.5),
        v1.RandomHorizontalFlip(),
    ]
    if strong is not None:
        steps.append(strong)
    return v1.Compose([*steps, v1.ToTensor(), v1.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


_KEY_CROP = (224, (0.2, 1.0))
# (size, (min scale, max scale)) per crop; each crop makes one weak and one strong view.
CLSA_REFERENCE_CROPS = {
    "single": ((224, (0.2, 1.0)), (96, (0.086, 0.429))),
    "multi": (
        (224, (0.2, 1.0)),
        (192, (0.172, 0.86)),
        (160, (0.143, 0.715)),
        (128, (0.114, 0.571)),
        (96, (0.086, 0.429)),
    ),
}


def _all_views(transforms):
    return lambda image: [transform(image) for transform in transforms]


def clsa_reference_pipeline(variant):
    """PIL RGB image -> [key, weak_0..weak_n-1, strong_0..strong_n-1] float32 tensors, as CLSA's
    Multi_FixTransform builds them: 5 views for "single" (training uses weak 224 and strong 96 only),
    11 for "multi"."""
    if variant not in CLSA_REFERENCE_CROPS:
        raise ValueError(f"unknown CLSA variant {variant!r}, expected one of {sorted(CLSA_REFERENCE_CROPS)}")
    crops = CLSA_REFERENCE_CROPS[variant]
    weak = [_view(size, scale) for size, scale in crops]
    strong = [_view(size, scale, RandAugmentMC(n=5, m=10)) for size, scale in crops]
    return _all_views([_view(*_KEY_CROP), *weak, *strong])


def moco_v2_pipeline():
    """PIL RGB image -> [query, key]: MoCo v2's TwoCropsTransform of aug_plus."""
    key = _view(*_KEY_CROP)
    return _all_views([key, key])
