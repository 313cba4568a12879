"""The one sampler of view parameters: every random choice of every view of an image, as a plain record.

An image's draws come from its own generator, seeded by (seed, epoch, image index). So they do not
depend on the process or worker count, on what ran before, or on the executor: a resumed run, and
either executor (pretrain/views/per_image.py, pretrain/views/batched.py), sees the same views.

Each view takes a fixed number of uniforms from the image's generator, in the order of
`ViewSet.views.flat()`, and every draw is a function of its uniforms: an event with probability p is
u < p, a value in [a, b) is a + u (b - a), an integer in a..b is floor(a + u (b - a + 1)), and the
jitter order is the argsort of four uniforms. The crop box needs the image size, so the record holds
RandomResizedCrop's draws and `crop_boxes` turns them into boxes once the size is known.
"""

from dataclasses import dataclass

import numpy as np

from pretrain.views.spec import STRONG_OPS, WEAK_STAGE, Views

_STRONG_LOW = np.array([op.low or 0.0 for op in STRONG_OPS])
_STRONG_HIGH = np.array([op.high or 0.0 for op in STRONG_OPS])
_STRONG_INTEGER = np.array([op.integer for op in STRONG_OPS])


@dataclass
class ViewParams:
    """Every random draw of one view for N images (numpy arrays, one row per image)."""

    crop_area: np.ndarray  # N x attempts: fractions of the image area, ~ U(view scale)
    crop_log_ratio: np.ndarray  # N x attempts: log aspect ratios (width / height)
    crop_offset: np.ndarray  # N x 2 in [0, 1): the crop's place in the room left, (top, left)
    jitter: np.ndarray  # N, colour jitter applied
    jitter_order: np.ndarray  # N x 4: a permutation of spec.JITTER_OPS
    jitter_factors: np.ndarray  # N x 4: brightness, contrast, saturation factors and the hue shift
    grayscale: np.ndarray  # N
    blur: np.ndarray  # N
    blur_sigma: np.ndarray  # N
    flip: np.ndarray  # N
    strong_ops: np.ndarray | None = None  # N x rounds: index into spec.STRONG_OPS
    strong_applied: np.ndarray | None = None  # N x rounds
    strong_magnitudes: np.ndarray | None = None  # N x rounds

    def rows(self, index):
        """The record of the images `index` (a slice or an index array) only."""
        return ViewParams(**{name: None if value is None else value[index] for name, value in vars(self).items()})


def _columns(view, num_ops):
    """How many uniforms each draw of a view's record takes, in the order they are taken (a strong view's
    picks, applied draws and magnitudes last)."""
    attempts = WEAK_STAGE.crop_attempts
    crop = dict(crop_area=attempts, crop_log_ratio=attempts, crop_offset=2)
    weak = dict(jitter=1, jitter_order=4, jitter_factors=4, grayscale=1, blur=1, blur_sigma=1, flip=1)
    return {**crop, **weak, "strong": 3 * num_ops if view.strong else 0}


def _view_params(view, u, num_ops, prob, stage):
    """Decode one view's N x count uniforms `u` into its ViewParams, with the weak stage `stage`."""
    counts = _columns(view, num_ops)
    u = dict(zip(counts, np.split(u, np.cumsum(list(counts.values()))[:-1], axis=1)))
    low, high = view.scale
    log_low, log_high = np.log(stage.crop_ratio)
    jitter_low, jitter_high = np.array(stage.jitter_low), np.array(stage.jitter_high)
    sigma_low, sigma_high = stage.blur_sigma
    params = ViewParams(
        crop_area=low + u["crop_area"] * (high - low),
        crop_log_ratio=log_low + u["crop_log_ratio"] * (log_high - log_low),
        crop_offset=u["crop_offset"],
        jitter=u["jitter"][:, 0] < stage.jitter_prob,
        jitter_order=np.argsort(u["jitter_order"], axis=1, kind="stable"),
        jitter_factors=jitter_low + u["jitter_factors"] * (jitter_high - jitter_low),
        grayscale=u["grayscale"][:, 0] < stage.grayscale_prob,
        blur=u["blur"][:, 0] < stage.blur_prob,
        blur_sigma=sigma_low + u["blur_sigma"][:, 0] * (sigma_high - sigma_low),
        flip=u["flip"][:, 0] < stage.flip_prob,
    )
    if view.strong:
        strong = u["strong"]
        picks = np.minimum((strong[:, :num_ops] * len(STRONG_OPS)).astype(np.int64), len(STRONG_OPS) - 1)
        unit = strong[:, 2 * num_ops :]
        low, high, integer = _STRONG_LOW[picks], _STRONG_HIGH[picks], _STRONG_INTEGER[picks]
        params.strong_ops = picks
        params.strong_applied = strong[:, num_ops : 2 * num_ops] < prob
        params.strong_magnitudes = np.where(
            integer, np.minimum(np.floor(low + unit * (high - low + 1)), high), low + unit * (high - low)
        )
    return params


def draws(view_set, seed, epoch, indices):
    """The uniforms of every view of the images `indices` in `epoch` (N x the views' count), each image's
    from its own generator: what `records` turns into their parameters."""
    total = sum(sum(_columns(view, view_set.num_ops).values()) for view in view_set.views.flat())
    rows = [np.random.default_rng((seed, epoch, int(index))).random(total) for index in indices]
    return np.stack(rows) if rows else np.zeros((0, total))


def records(view_set, uniforms):
    """The parameters of every view (Views of ViewParams) of the images whose `draws` are `uniforms`."""
    specs = view_set.views.flat()
    counts = [sum(_columns(view, view_set.num_ops).values()) for view in specs]
    per_view = np.split(uniforms, np.cumsum(counts)[:-1], axis=1)
    params = [
        _view_params(view, u, view_set.num_ops, view_set.prob, view_set.weak_stage) for view, u in zip(specs, per_view)
    ]
    return Views.from_flat(params, len(view_set.views.weak))


def sample(view_set, seed, epoch, indices):
    """The parameters of every view of the images `indices` in `epoch`, as Views of ViewParams."""
    return records(view_set, draws(view_set, seed, epoch, indices))


def crop_boxes(params, heights, widths):
    """RandomResizedCrop's boxes for images of these sizes: N x 4 int64 rows (top, left, height, width).

    As v2.RandomResizedCrop: the first of the attempts whose box fits wins; if none fits, the central
    crop with the aspect ratio clamped to the allowed range.
    """
    heights = np.asarray(heights, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    area = (heights * widths)[:, None] * params.crop_area
    aspect = np.exp(params.crop_log_ratio)
    w = np.round(np.sqrt(area * aspect))
    h = np.round(np.sqrt(area / aspect))
    fits = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    rows, first = np.arange(len(heights)), fits.argmax(axis=1)
    found = fits.any(axis=1)
    h, w = h[rows, first], w[rows, first]
    top = np.floor(params.crop_offset[:, 0] * (heights - h + 1))
    left = np.floor(params.crop_offset[:, 1] * (widths - w + 1))

    ratio_low, ratio_high = WEAK_STAGE.crop_ratio
    in_ratio = widths / heights
    fallback_w = np.where(in_ratio > ratio_high, np.round(heights * ratio_high), widths)
    fallback_h = np.where(in_ratio < ratio_low, np.round(widths / ratio_low), heights)
    h, w = np.where(found, h, fallback_h), np.where(found, w, fallback_w)
    top = np.where(found, top, (heights - h) // 2)
    left = np.where(found, left, (widths - w) // 2)
    return np.stack([top, left, h, w], axis=1).astype(np.int64)
