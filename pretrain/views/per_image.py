"""The per-image executor (DATA.AUGMENT workers): one image's views, made in a DataLoader worker on the CPU.

It applies the sampler's record of one image (pretrain/views/sampler.py) with the uint8 kernels of
pretrain/views/cpu_ops.py (Pillow's crop and v2's uint8 resize, OpenCV for the rest). The views stay uint8
and H x W x 3, as the kernels make them: the training process converts and normalises them on its
device (`normalize`), so the workers pay neither the float conversion nor the copy to channels-first.
"""

import torch

from common.constants import IMAGENET_MEAN, IMAGENET_STD
from pretrain.views import cpu_ops as ops
from pretrain.views.sampler import crop_boxes
from pretrain.views.spec import JITTER_OPS, STRONG_OPS, Views, affine_matrices, blur_kernel_size

_JITTER_KERNELS = {
    "brightness": ops.adjust_brightness,
    "contrast": ops.adjust_contrast,
    "saturation": ops.adjust_saturation,
    "hue": ops.adjust_hue,
}
_PIXEL_KERNELS = {
    "AutoContrast": lambda image, _: ops.autocontrast(image),
    "Invert": lambda image, _: ops.invert(image),
    "Equalize": lambda image, _: ops.equalize(image),
    "Solarize": lambda image, threshold: ops.solarize(image, int(threshold)),
    "Posterize": lambda image, bits: ops.posterize(image, int(bits)),
    "Contrast": ops.adjust_contrast,
    "Color": ops.adjust_saturation,
    "Brightness": ops.adjust_brightness,
    "Sharpness": ops.adjust_sharpness,
}


def _view(image, view, p):
    """One view (uint8 H x W x 3 numpy) of a PIL image for row 0 of its ViewParams `p`."""
    top, left, height, width = crop_boxes(p, [image.height], [image.width])[0].tolist()
    out = ops.resized_crop(image, top, left, height, width, view.size)
    if p.jitter[0]:
        for op_index in p.jitter_order[0].tolist():
            out = _JITTER_KERNELS[JITTER_OPS[op_index]](out, float(p.jitter_factors[0, op_index]))
    if p.grayscale[0]:
        out = ops.rgb_to_grayscale(out)
    if p.blur[0]:
        out = ops.gaussian_blur(out, blur_kernel_size(view.size), float(p.blur_sigma[0]))
    if p.flip[0]:
        out = ops.hflip(out)
    if view.strong:
        for pick, applied, magnitude in zip(p.strong_ops[0].tolist(), p.strong_applied[0], p.strong_magnitudes[0]):
            if not applied:
                continue
            op = STRONG_OPS[pick]
            if op.geometric:
                out = ops.affine(out, affine_matrices([op.name], [magnitude], view.size, view.size)[0])
            else:
                out = _PIXEL_KERNELS[op.name](out, float(magnitude))
    return out


class PerImageViews:
    """A PIL image and its record (Views of ViewParams with one row) -> Views of uint8 H x W x 3 tensors.

    Args:
        view_set (ViewSet): the run's views (pretrain.views.spec).
    """

    def __init__(self, view_set):
        self.view_set = view_set

    def __call__(self, image, params):
        if image.mode != "RGB":
            image = image.convert("RGB")
        made = [torch.from_numpy(_view(image, view, p)) for view, p in zip(self.view_set.views.flat(), params.flat())]
        return Views.from_flat(made, len(params.weak))

    def __repr__(self):
        views = ", ".join(f"{v.size} strong" if v.strong else str(v.size) for v in self.view_set.views.flat())
        return f"{type(self).__name__}({views}; num_ops={self.view_set.num_ops}, prob={self.view_set.prob})"


def normalize(views, device, dtype=torch.float32, memory_format=torch.contiguous_format):
    """A batch of per-image views (Views of uint8 N x H x W x 3) as the model takes them: on `device`,
    channels first, scaled to [0, 1] and normalised with ImageNet's mean and std, in `dtype`."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0

    def one(batch):
        images = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32)
        return ((images - mean) / std).to(dtype=dtype, memory_format=memory_format)

    return views.map(one)
