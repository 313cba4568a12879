"""Image ops on a batch (N x 3 x H x W, float in [0, 1]) with one parameter per image.

These are the kernels of the batched executor (pretrain/views/batched.py), under the names of
spec.KERNEL_LEVELS, as pretrain/views/cpu_ops.py. Each one computes what
torchvision.transforms.v2.functional computes for one image with a scalar parameter, but for the
whole batch at once with a parameter tensor of shape (N,), on whatever device the batch lives on.
Where v2's kernel is already batched and takes no parameter (grayscale, autocontrast, equalize), it
is called directly. The tests hold every op against v2.functional image by image.
"""

import torch
import torch.nn.functional as nnf
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as F


def to_device(values, like):
    """`values` in `like`'s dtype on its device, copied without waiting: a blocking host-to-device
    copy synchronises the host with the stream, and the ops here take parameters at every call."""
    return values.to(dtype=like.dtype).to(like.device, non_blocking=True)


def _per_image(values, like):
    """(N,) parameters as an (N, 1, 1, 1) tensor that broadcasts over `like`'s images."""
    return to_device(values, like).view(-1, 1, 1, 1)


def _blend(image, other, ratio):
    # v2's _blend for float images: ratio * image + (1 - ratio) * other, clamped to the valid range.
    ratio = _per_image(ratio, image)
    return (image * ratio + other * (1.0 - ratio)).clamp_(0.0, 1.0)


def brightness(images, factors):
    return _blend(images, torch.zeros((), device=images.device), factors)


def contrast(images, factors, grey_levels=True):
    """v2's adjust_contrast as on uint8 images, which averages the grayscale floored to grey levels
    (`grey_levels` False: as on float images)."""
    grey = F.rgb_to_grayscale(images)
    if grey_levels:
        grey = grey.mul_(255.0).add_(2.0**-12).floor_().div_(255.0)
    return _blend(images, grey.mean(dim=(-3, -2, -1), keepdim=True), factors)


def saturation(images, factors):
    return _blend(images, F.rgb_to_grayscale(images), factors)


# v2's RGB <-> HSV conversions (torchvision.transforms.v2.functional._color, BSD-3-Clause), PIL's formulas
# on a batch: v2's adjust_hue, which they serve, takes only one shift for all images.
def rgb_to_hsv(images):
    """N x 3 x H x W RGB in [0, 1] to HSV, each in [0, 1] (hue in turns)."""
    r, g, _ = images.unbind(dim=-3)
    minc, maxc = torch.aminmax(images, dim=-3)
    # Where maxc == minc, saturation and hue are 0: a denominator of 1 there keeps NaN out.
    eqc = maxc == minc
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    channels_range_divisor = torch.where(eqc, ones, channels_range).unsqueeze_(dim=-3)
    rc, gc, bc = ((maxc.unsqueeze(dim=-3) - images) / channels_range_divisor).unbind(dim=-3)
    maxc_neq_r = maxc != r
    maxc_eq_g = maxc == g
    hg = rc.add(2.0).sub_(bc).mul_(maxc_eq_g & maxc_neq_r)
    hr = bc.sub_(gc).mul_(~maxc_neq_r)
    hb = gc.add_(4.0).sub_(rc).mul_(maxc_neq_r.logical_and_(maxc_eq_g.logical_not_()))
    h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(images):
    """The inverse of `rgb_to_hsv`."""
    h, s, v = images.unbind(dim=-3)
    h6 = h.mul(6)
    i = torch.floor(h6)
    f = h6.sub_(i)
    i = i.to(dtype=torch.int32).remainder_(6)
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    # Which of v, p, q, t each of r, g, b is, by hue sextant i.
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], dtype=torch.long)
    select = select.to(device=images.device, non_blocking=True)[:, i].moveaxis(0, -3)
    return vpqt.gather(-3, select)


def hue(images, shifts):
    h, s, v = rgb_to_hsv(images).unbind(dim=-3)
    h = (h + _per_image(shifts, h).view(-1, 1, 1)).remainder_(1.0)
    return hsv_to_rgb(torch.stack((h, s, v), dim=-3))


def sharpness(images, factors):
    # PIL's SMOOTH filter (3 x 3: 1s around a 5, over 13) inside the image, the original one-pixel
    # border (as v2 and PIL). Sums rather than a convolution, which TF32 would round on a GPU.
    if images.shape[-1] <= 2 or images.shape[-2] <= 2:
        return images
    neighbourhood = nnf.avg_pool2d(images, 3, stride=1) * 9.0
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = (neighbourhood + 4.0 * images[..., 1:-1, 1:-1]) / 13.0
    return _blend(images, degenerate, factors)


def invert(images):
    return 1.0 - images


def solarize(images, thresholds):
    """`thresholds` in grey levels (0..256, as Table 1): pixels at or above them are inverted."""
    return torch.where(images * 255.0 >= _per_image(thresholds, images) - 1e-3, 1.0 - images, images)


def posterize(images, bits):
    """Keep the top `bits` bits of each pixel's grey level (uint8 semantics, as PIL and v2 on uint8)."""
    step = _per_image(2.0 ** (8 - bits.to(torch.float64)), images)
    levels = (images * 255.0).round_()
    return (levels / step).floor_().mul_(step).div_(255.0)


def autocontrast(images):
    return F.autocontrast(images)


def equalize(images):
    # v2 quantises float images to uint8 for the histogram, as our uint8 CPU path sees them.
    return F.equalize(images)


def grayscale(images):
    return F.rgb_to_grayscale(images, num_output_channels=3)


def hflip(images):
    return images.flip(-1)


def gaussian_blur_matrices(length, kernel_size, sigmas):
    """M (N x length x length), one per sigma, such that x @ M[i] blurs x along its last dimension
    exactly as v2's Gaussian blur does: the same 1-D kernel, its reflect padding folded into M."""
    device = sigmas.device
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, device=device)
    weights = torch.exp(-0.5 * (taps / sigmas.to(torch.float32).view(-1, 1)) ** 2)
    weights /= weights.sum(dim=1, keepdim=True)  # N x k
    out = torch.arange(length, device=device).unsqueeze(1)
    src = (out + taps).abs()
    src = torch.where(src > length - 1, 2 * (length - 1) - src, src)  # length x k
    n = len(sigmas)
    matrices = torch.zeros(n, length, length, device=device)
    batch = torch.arange(n, device=device).view(-1, 1, 1).expand(n, length, len(taps))
    matrices.index_put_(
        (batch.flatten(), src.expand(n, -1, -1).flatten(), out.expand_as(src).expand(n, -1, -1).flatten()),
        weights.unsqueeze(1).expand(n, length, -1).flatten(),
        accumulate=True,
    )
    return matrices


def gaussian_blur(images, kernel_size, sigmas):
    """v2.functional.gaussian_blur with one sigma per image (the same along both axes), as M_h^T @ x @ M_w
    (the matrices' products are faster than a 2-D convolution on the CPU)."""
    sigmas = to_device(sigmas, images)
    rows = gaussian_blur_matrices(images.shape[-2], kernel_size, sigmas).transpose(1, 2).unsqueeze(1)
    columns = gaussian_blur_matrices(images.shape[-1], kernel_size, sigmas).unsqueeze(1)
    return rows.to(images.dtype) @ images @ columns.to(images.dtype)


def affine(images, matrices):
    """Warp each image by its inverse affine matrix (N x 2 x 3), nearest-neighbour, black outside.

    A matrix maps an output pixel to the input pixel it reads, both in pixels relative to the
    image centre (x right, y down): v2.functional.affine's convention. One grid_sample serves the batch.
    """
    n, _, height, width = images.shape
    dtype, device = images.dtype, images.device
    # The sampling grid is computed in v2's order (pixel offsets from the centre times the matrix,
    # then normalised), so that nearest-neighbour ties between two pixels break the same way.
    base = torch.empty(height, width, 3, dtype=dtype, device=device)
    base[..., 0] = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=device)
    base[..., 1] = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=device).unsqueeze(-1)
    base[..., 2] = 1.0
    theta = to_device(matrices, images).transpose(1, 2).contiguous()
    theta[..., 0] /= 0.5 * width
    theta[..., 1] /= 0.5 * height
    grid = base.view(1, height * width, 3).expand(n, -1, -1).bmm(theta).view(n, height, width, 2)
    return nnf.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def resized_crops(images, boxes, size):
    """Cut box i of images[image_of[i]] and resize it to size x size, for a batch of boxes.

    Args:
        images (Tensor): N x 3 x H x W float, images padded to a common size by edge replication.
        boxes (Tensor): K x 5 float, rows (image index, left, top, right, bottom) in pixel-edge coordinates.
        size (int): output side.

    roi_align (aligned) samples each output pixel at the same positions as a bilinear resize. Where a
    crop shrinks, it averages ceil(crop / size) samples per output pixel along each axis, a box filter,
    where v2's antialiased resize uses a triangle filter of the same width: the tests bound the gap.
    """
    return roi_align(
        images, to_device(boxes, images), output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
