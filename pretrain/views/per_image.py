"""The per-image executor (DATA.AUGMENT per_image): one image's views, made in a DataLoader worker on the CPU.

It runs the steps of `spec.plan` for the sampler's record of one image (pretrain/views/sampler.py) with the
uint8 kernels of pretrain/views/cpu_ops.py (Pillow's crop and v2's uint8 resize, OpenCV for the rest). The
views stay uint8 and H x W x 3, as the kernels make them: the training process converts and normalises them
on its device (`to_model`), so the workers pay neither the float conversion nor the copy to channels-first.
"""

import numpy as np
import torch

from pretrain.views import cpu_ops as ops
from pretrain.views.sampler import crop_boxes
from pretrain.views.spec import Executor, Views, normalize, plan


def _view(image, view, p):
    """One view (uint8 H x W x 3 numpy) of a PIL image for row 0 of its ViewParams `p`."""
    top, left, height, width = crop_boxes(p, [image.height], [image.width])[0].tolist()
    out = ops.resized_crop(image, top, left, height, width, view.size)
    for kernel, rows, args in plan(view, p):
        if rows[0]:
            out = getattr(ops, kernel)(out, *(arg[0] if isinstance(arg, np.ndarray) else arg for arg in args))
    return out


class PerImageViews(Executor):
    """A PIL image and its record (Views of ViewParams with one row) -> Views of uint8 H x W x 3 tensors.

    Args:
        view_set (ViewSet): the run's views (pretrain.views.spec).
    """

    def __call__(self, image, params):
        if image.mode != "RGB":
            image = image.convert("RGB")
        made = [torch.from_numpy(_view(image, view, p)) for view, p in zip(self.view_set.views.flat(), params.flat())]
        return Views.from_flat(made, len(params.weak))


def to_model(views, device, dtype=torch.float32, memory_format=torch.contiguous_format):
    """A batch of per-image views (Views of uint8 N x H x W x 3) as the model takes them: on `device`,
    channels first, normalised (`spec.normalize`) in `dtype` and `memory_format`."""
    return views.map(
        lambda batch: normalize(
            batch.to(device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32).div_(255.0), dtype, memory_format
        )
    )
