"""The batched data path (DATA.AUGMENT batched): every view of a batch made at once on the training device.

The views are those of pretrain/augment.py (MultiViewTransform), drawn from the same distributions:
RandomResizedCrop, colour jitter (p=0.8, its four adjustments in random order), grayscale (p=0.2),
Gaussian blur (p=0.5), horizontal flip, and for strong views the 5 rounds of Table 1. Only the way
they are computed differs: the parameters of the whole batch are drawn up front on the CPU from one
generator, then each op runs once over the images that drew it (pretrain/batched_ops.py).

Two deliberate differences from the per-image path, both bounded by the tests:
- on a GPU, crops are resized by roi_align (a box-filter average where a crop shrinks; v2 uses a
  triangle filter), which reads the pixels just outside the crop at its border, as a resize of the
  whole image would (on the CPU, one v2 resize per crop is faster and exact);
- intermediate results stay float instead of being rounded to uint8 after every op.

Drawing the parameters on the CPU keeps the device free of host syncs: which images take which op
is known before any kernel runs. The generator is seeded from (seed, rank, iteration), so a resumed
run makes the same views and every process makes different ones.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from common.constants import IMAGENET_MEAN, IMAGENET_STD
from pretrain import batched_ops as ops
from pretrain.augment import STRONG_OPS, blur_kernel_size

# Per-image ops of the strong rounds, in STRONG_OPS order; the geometric ones share one warp per round.
_PIXEL_OPS = {
    "AutoContrast": lambda images, _: ops.autocontrast(images),
    "Invert": lambda images, _: ops.invert(images),
    "Equalize": lambda images, _: ops.equalize(images),
    "Solarize": ops.solarize,
    "Posterize": ops.posterize,
    "Contrast": ops.contrast,
    "Color": ops.saturation,
    "Brightness": ops.brightness,
    "Sharpness": ops.sharpness,
}
_STRONG_NAMES = tuple(STRONG_OPS)
assert set(_STRONG_NAMES) == set(_PIXEL_OPS) | set(ops.AFFINE_OPS)
# Table 1's ranges per op index (0 for ops without magnitude), and each op's index in AFFINE_OPS (-1: none).
_STRONG_LOW = torch.tensor([STRONG_OPS[name].low or 0.0 for name in _STRONG_NAMES], dtype=torch.float64)
_STRONG_HIGH = torch.tensor([STRONG_OPS[name].high or 0.0 for name in _STRONG_NAMES], dtype=torch.float64)
_STRONG_INTEGER = torch.tensor([STRONG_OPS[name].integer for name in _STRONG_NAMES])
_AFFINE_KIND = torch.tensor([ops.AFFINE_OPS.index(name) if name in ops.AFFINE_OPS else -1 for name in _STRONG_NAMES])
_JITTER_OPS = (ops.brightness, ops.contrast, ops.saturation, ops.hue)  # ColorJitter's fn_idx order
# ColorJitter(0.4, 0.4, 0.4, 0.1): factor ranges (the hue's is a shift), in _JITTER_OPS order.
_JITTER_LOW = torch.tensor([0.6, 0.6, 0.6, -0.1], dtype=torch.float64)
_JITTER_HIGH = torch.tensor([1.4, 1.4, 1.4, 0.1], dtype=torch.float64)


def batch_generator(seed, rank, iteration):
    """The CPU generator that draws every augmentation parameter of one batch of one process."""
    state = np.random.SeedSequence((seed, rank, iteration)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _uniform(shape, low, high, generator):
    return torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low


def _bernoulli(count, p, generator):
    return torch.rand(count, generator=generator) < p


def sample_crop_boxes(heights, widths, scale, generator, ratio=(3 / 4, 4 / 3), attempts=10):
    """v2.RandomResizedCrop's crops, vectorised: (N, 4) int64 rows (top, left, height, width).

    Per image: up to `attempts` draws of an area fraction ~ U(scale) and a log aspect ratio ~ U(log
    ratio), the first that fits wins; if none fits, the central crop with the aspect ratio clamped.
    """
    heights = torch.as_tensor(heights, dtype=torch.float64)
    widths = torch.as_tensor(widths, dtype=torch.float64)
    n = len(heights)
    area = (heights * widths).unsqueeze(1) * _uniform((n, attempts), *scale, generator)
    aspect = torch.exp(_uniform((n, attempts), *np.log(ratio), generator))
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= widths.unsqueeze(1)) & (h > 0) & (h <= heights.unsqueeze(1))
    first = fits.to(torch.int8).argmax(dim=1)
    found = fits.any(dim=1)
    rows = torch.arange(n)
    h, w = h[rows, first], w[rows, first]
    offsets = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(offsets[:, 0] * (heights - h + 1))
    left = torch.floor(offsets[:, 1] * (widths - w + 1))

    in_ratio = widths / heights
    fallback_w = torch.where(in_ratio > ratio[1], torch.round(heights * ratio[1]), widths)
    fallback_h = torch.where(in_ratio < ratio[0], torch.round(widths / ratio[0]), heights)
    h, w = torch.where(found, h, fallback_h), torch.where(found, w, fallback_w)
    top = torch.where(found, top, torch.div(heights - h, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(widths - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def sample_strong_ops(n, num_ops, prob, generator):
    """(op index into STRONG_OPS, applied?, magnitude), each N x num_ops, as StrongAugment draws them."""
    picks = torch.randint(len(_STRONG_NAMES), (n, num_ops), generator=generator)
    applied = _bernoulli((n, num_ops), prob, generator)
    unit = torch.rand(n, num_ops, generator=generator, dtype=torch.float64)
    low, high, integer = _STRONG_LOW[picks], _STRONG_HIGH[picks], _STRONG_INTEGER[picks]
    magnitudes = torch.where(
        integer, torch.floor(low + unit * (high - low + 1)).clamp(max=high), low + unit * (high - low)
    )
    return picks, applied, magnitudes


@dataclass
class ViewParams:
    """Every random draw of one view for a batch of N images (CPU tensors, one row per image)."""

    boxes: torch.Tensor  # N x 4 (top, left, height, width)
    jitter: torch.Tensor  # N, colour jitter applied
    jitter_order: torch.Tensor  # N x 4, a permutation of (brightness, contrast, saturation, hue)
    jitter_factors: torch.Tensor  # N x 4, the factors (hue: the shift) in that fixed order
    grayscale: torch.Tensor  # N
    blur: torch.Tensor  # N
    blur_sigma: torch.Tensor  # N
    flip: torch.Tensor  # N
    strong_ops: torch.Tensor | None = None  # N x rounds, index into STRONG_OPS
    strong_applied: torch.Tensor | None = None  # N x rounds
    strong_magnitudes: torch.Tensor | None = None  # N x rounds


@dataclass(frozen=True)
class ViewSpec:
    size: int
    scale: tuple
    strong: bool


def _apply_to(images, rows, fn, *params):
    """images[rows] = fn(images[rows], *params[rows]) in place; `rows` is a CPU bool mask."""
    if not bool(rows.any()):
        return
    index = rows.nonzero().squeeze(1)
    on_device = index.to(images.device, non_blocking=True)
    images[on_device] = fn(images[on_device], *(p[index] for p in params))


class PaddedImages:
    """Decoded images of different sizes as float batches in [0, 1], and their resized crops.

    Images are sorted by size and grouped so that no group's padded tensor exceeds `max_pixels`
    pixels per channel; each is padded by repeating its last row and column, so bilinear samples at
    its border never mix in padding.

    `crop_method` "roi_align" resizes all crops of a group in one call, "interpolate" runs one
    antialiased resize per crop (exactly v2's). The default is the faster one on the images' device:
    roi_align on a GPU (8x, the issue's H200 probe), interpolate on the CPU (4x, benchmarks.md).
    """

    def __init__(self, images, max_pixels=2**25, crop_method=None):
        device = images[0].device
        self.crop_method = crop_method or ("interpolate" if device.type == "cpu" else "roi_align")
        self.heights = [image.shape[-2] for image in images]
        self.widths = [image.shape[-1] for image in images]
        order = sorted(range(len(images)), key=lambda i: (self.heights[i], self.widths[i]))
        self.groups = []
        while order:
            members, height, width = [], 0, 0
            for i in order:
                h, w = max(height, self.heights[i]), max(width, self.widths[i])
                if members and (len(members) + 1) * h * w > max_pixels:
                    break
                members.append(i)
                height, width = h, w
            order = order[len(members) :]
            batch = torch.empty(len(members), 3, height, width, device=device)
            for slot, i in enumerate(members):
                h, w = self.heights[i], self.widths[i]
                batch[slot, :, :h, :w] = images[i]
                batch[slot, :, :h, w:] = batch[slot, :, :h, w - 1 : w]
                batch[slot, :, h:] = batch[slot, :, h - 1 : h]
            self.groups.append((torch.tensor(members), batch.div_(255.0)))

    def crops(self, boxes, size):
        """N x 3 x size x size: image i's box i (top, left, height, width) resized, in image order."""
        device = self.groups[0][1].device
        out = torch.empty(len(boxes), 3, size, size, device=device)
        for members, batch in self.groups:
            if self.crop_method == "interpolate":
                for slot, (top, left, height, width) in enumerate(boxes[members].tolist()):
                    out[members[slot]] = F.resize(
                        batch[slot, :, top : top + height, left : left + width], [size, size], antialias=True
                    )
                continue
            top, left, height, width = boxes[members].to(torch.float64).unbind(dim=1)
            rois = torch.stack(
                [torch.arange(len(members), dtype=torch.float64), left, top, left + width, top + height], dim=1
            )
            out[members.to(device, non_blocking=True)] = ops.resized_crops(batch, rois, size)
        return out


class BatchedViews:
    """The views of MultiViewTransform ([key, *weak, *strong]) for a whole batch at once.

    Takes the same arguments as MultiViewTransform, and `crop_method` (PaddedImages'; default: the
    faster on the device). `sample` draws the parameters and `apply` makes the views, so either can
    be checked alone. `__call__` does both.
    """

    def __init__(
        self,
        key_size=224,
        key_scale=(0.2, 1.0),
        weak=(),
        strong=(),
        num_ops=5,
        prob=0.5,
        strong_key=False,
        crop_method=None,
    ):
        self.views = (
            [ViewSpec(key_size, tuple(key_scale), strong_key)]
            + [ViewSpec(size, tuple(scale), False) for size, scale in weak]
            + [ViewSpec(size, tuple(scale), True) for size, scale in strong]
        )
        self.num_ops, self.prob, self.crop_method = num_ops, prob, crop_method

    def sample(self, heights, widths, generator):
        """One ViewParams per view for images of the given sizes."""
        n = len(heights)
        params = []
        for view in self.views:
            p = ViewParams(
                boxes=sample_crop_boxes(heights, widths, view.scale, generator),
                jitter=_bernoulli(n, 0.8, generator),
                jitter_order=torch.rand(n, 4, generator=generator).argsort(dim=1),
                jitter_factors=_JITTER_LOW
                + torch.rand(n, 4, generator=generator, dtype=torch.float64) * (_JITTER_HIGH - _JITTER_LOW),
                grayscale=_bernoulli(n, 0.2, generator),
                blur=_bernoulli(n, 0.5, generator),
                blur_sigma=_uniform(n, 0.1, 2.0, generator),
                flip=_bernoulli(n, 0.5, generator),
            )
            if view.strong:
                p.strong_ops, p.strong_applied, p.strong_magnitudes = sample_strong_ops(
                    n, self.num_ops, self.prob, generator
                )
            params.append(p)
        return params

    def apply(self, padded, params, dtype=torch.float32, memory_format=torch.contiguous_format):
        """The views of `padded` (a PaddedImages) for `params`, normalised, in `dtype` and `memory_format`."""
        device = padded.groups[0][1].device
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).to(device, non_blocking=True)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1).to(device, non_blocking=True)
        out = []
        for view, p in zip(self.views, params):
            images = padded.crops(p.boxes, view.size)
            self.weak_ops(images, p)
            if view.strong:
                self.strong_ops(images, p)
            out.append(((images - mean) / std).to(dtype=dtype, memory_format=memory_format))
        return out

    @staticmethod
    def weak_ops(images, p):
        """MoCo v2's colour jitter, grayscale, blur and flip, in place on crops (N x 3 x S x S)."""
        for step in range(4):
            for op_index, op in enumerate(_JITTER_OPS):
                _apply_to(images, p.jitter & (p.jitter_order[:, step] == op_index), op, p.jitter_factors[:, op_index])
        _apply_to(images, p.grayscale, ops.grayscale)
        kernel_size = blur_kernel_size(images.shape[-1])
        _apply_to(images, p.blur, lambda x, sigma: ops.gaussian_blur(x, kernel_size, sigma), p.blur_sigma)
        _apply_to(images, p.flip, ops.hflip)

    @staticmethod
    def strong_ops(images, p):
        """The rounds of Table 1 ops, in place on weak-augmented crops."""
        size = images.shape[-2:]
        for round_ in range(p.strong_ops.shape[1]):
            picks, applied = p.strong_ops[:, round_], p.strong_applied[:, round_]
            magnitudes = p.strong_magnitudes[:, round_]
            _apply_to(
                images,
                applied & (_AFFINE_KIND[picks] >= 0),
                lambda x, kinds, m: ops.affine(x, ops.affine_matrices(kinds, m, *size)),
                _AFFINE_KIND[picks],
                magnitudes,
            )
            for name, op in _PIXEL_OPS.items():
                _apply_to(images, applied & (picks == _STRONG_NAMES.index(name)), op, magnitudes)

    def __call__(self, images, generator, dtype=torch.float32, memory_format=torch.contiguous_format):
        padded = PaddedImages(images, crop_method=self.crop_method)
        params = self.sample(padded.heights, padded.widths, generator)
        return self.apply(padded, params, dtype, memory_format)

    def __repr__(self):
        views = ", ".join(f"{v.size} strong" if v.strong else str(v.size) for v in self.views)
        return f"{type(self).__name__}({views}; num_ops={self.num_ops}, prob={self.prob})"
