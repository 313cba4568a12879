"""The batched executor (DATA.AUGMENT batched): every view of a batch made at once on the training device.

It runs the steps of `spec.plan` for the sampler's records (pretrain/views/sampler.py), as the per-image
executor does (pretrain/views/per_image.py): each step runs once over the images that drew it, with the
kernels of pretrain/views/batched_ops.py, on float images in [0, 1] brought back to grey levels after every
step as v2's uint8 kernels leave them. The tests hold the two executors to each other pixel for pixel on
the same records. One difference is by design and bounded there: on a GPU, crops are resized by
roi_align (a box-filter average where a crop shrinks, where v2 uses a triangle filter); on the CPU,
one antialiased resize per crop, as the per-image executor.

The records are drawn on the host before any kernel runs, so which images take which op is known
without a device-to-host sync.
"""

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from pretrain.views import batched_ops as ops
from pretrain.views.sampler import crop_boxes
from pretrain.views.spec import KERNEL_LEVELS, Executor, Views, normalize, plan

# After each op the images are brought back to grey levels as v2's uint8 kernel of that op leaves
# them (spec.KERNEL_LEVELS), so that the batched executor computes what the per-image one computes on
# uint8: a threshold op or Equalize later in the chain then sees the same levels. The truncations keep
# a margin of 2^-12 level below each integer for float32's rounding noise.
_LEVELS = {
    "truncate": lambda images: images.mul(255.0).add_(2.0**-12).floor_().div_(255.0),
    "hue": lambda images: images.mul(255.999).floor_().div_(255.0),
    "round": lambda images: images.mul(255.0).round_().div_(255.0),
    "exact": lambda images: images,
}


def pack(steps):
    """The `steps` (spec.Step) that some image drew, as (kernel, index, args) with the drawing rows'
    indices and each array argument cut to those rows, and all their indices and array values in one
    int64 and one float64 array."""
    steps = [(kernel, np.flatnonzero(rows), args) for kernel, rows, args in steps]
    steps = [
        (kernel, index, [np.asarray(a[index], np.float64) if isinstance(a, np.ndarray) else a for a in args])
        for kernel, index, args in steps
        if len(index)
    ]
    indices = np.concatenate([index for _, index, _ in steps]) if steps else np.zeros(0, np.int64)
    arrays = [a.ravel() for _, _, args in steps for a in args if isinstance(a, np.ndarray)]
    return steps, indices, np.concatenate(arrays) if arrays else np.zeros(0)


def run_plan(images, steps):
    """Runs `steps` (spec.Step) in order on `images` in place: images[rows] =
    levels(kernel(images[rows], *args[rows])).

    The rows' indices and parameters of all steps go to the device in one int64 and one float64 copy
    (from pinned memory on a GPU), not one or two copies per step: a view makes up to ~70 steps.
    """
    steps, indices, values = pack(steps)
    if not steps:
        return
    indices, values = _to_device(indices, images.device), _to_device(values, images.device)
    index_at = value_at = 0
    for kernel, index, args in steps:
        rows = indices[index_at : index_at + len(index)]
        index_at += len(index)
        step_args = []
        for a in args:
            if isinstance(a, np.ndarray):
                step_args.append(values[value_at : value_at + a.size].view(a.shape))
                value_at += a.size
            else:
                step_args.append(a)
        images[rows] = _LEVELS[KERNEL_LEVELS[kernel]](getattr(ops, kernel)(images[rows], *step_args))


def _to_device(array, device):
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    # Pinned (torch's caching host allocator, which keeps the block until the copy is done), so that
    # the copy does not wait for the host.
    return tensor.pin_memory().to(device, non_blocking=True)


class PaddedImages:
    """Decoded images of different sizes as float batches in [0, 1], and their resized crops.

    Images are sorted by size and grouped so that no group's padded tensor exceeds `max_pixels`
    pixels per channel; each is padded by repeating its last row and column, so bilinear samples at
    its border never mix in padding.

    `crop_method` "roi_align" resizes all crops of a group in one call, "interpolate" runs one
    antialiased resize per crop (exactly v2's). The default is the faster one on the images' device:
    roi_align on a GPU, interpolate on the CPU (benchmarks.md, "the two data paths on the same cores").
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
        boxes = torch.from_numpy(boxes)
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


class BatchedViews(Executor):
    """Applies a batch's records to its images: `crops` gives the views as float images in [0, 1],
    `__call__` normalised for the model.

    Args:
        view_set (ViewSet): the run's views (pretrain.views.spec).
        crop_method (str): PaddedImages' crop method; default: the faster one on the device.
    """

    def __init__(self, view_set, crop_method=None):
        super().__init__(view_set)
        self.crop_method = crop_method

    def crops(self, images, params):
        """Views of float N x 3 x S x S crops in [0, 1] of `images` (uint8 3 x H x W, one device) for
        `params` (Views of ViewParams from pretrain.views.sampler.sample, one row per image)."""
        padded = PaddedImages(images, crop_method=self.crop_method)
        out = []
        for view, p in zip(self.view_set.views.flat(), params.flat()):
            crops = _LEVELS["round"](padded.crops(crop_boxes(p, padded.heights, padded.widths), view.size))
            run_plan(crops, plan(view, p))
            out.append(crops)
        return Views.from_flat(out, len(params.weak))

    def __call__(self, images, params, dtype=torch.float32, memory_format=torch.contiguous_format):
        """The views normalised for the model (`spec.normalize`), in `dtype` and `memory_format`."""
        return self.crops(images, params).map(lambda view: normalize(view, dtype, memory_format))
