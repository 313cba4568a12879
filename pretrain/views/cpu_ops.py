"""The per-image executor's kernels (pretrain/views/per_image.py): uint8 RGB images as numpy H x W x 3 arrays,
under the names of spec.KERNEL_LEVELS, as pretrain/views/batched_ops.py.

torchvision.transforms.v2.functional on uint8 CHW tensors defines what each kernel computes; OpenCV and
numpy compute it faster (the resized crop: Pillow's crop, then torch's uint8 resize, v2's own kernel).
Against v2, as tests/pretrain/test_cpu_ops.py measures:
- equal: resized_crop, brightness, contrast, autocontrast, equalize, invert, solarize, posterize, hflip,
  and grayscale but for 3 of the 2^24 colours (1 grey level);
- within 1 grey level: hue and gaussian_blur (on under 0.1% of values), sharpness and saturation. These
  two floor the exact blend, where v2's float32 lands just below an exact integer and truncates it a
  level down: up to 6% of values differ at factors such as 0.9 or 1.4, 0.2% on average at random ones;
- affine: nearest-neighbour ties break differently (OpenCV rounds coordinates in 1/1024 pixel fixed
  point): 0.5% of pixels at 30 degrees, 0.02% on average at random magnitudes.
Each kernel returns a new C-contiguous array (or its input, where it is an exact no-op) and never
writes to its input.
"""

import math

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

# v2 truncates where OpenCV rounds: this shift before rounding floors all but values within 2^-14 below an
# integer. The margin, 4 float32 ulps at level 255, keeps OpenCV's rounding noise from dropping an exact
# integer a level (a smaller one measured worse against v2).
_FLOOR = -0.5 + 2.0**-14
# v2's grayscale weights. Its weighted sums are multiples of 1e-4, so a -0.5 + 0.5e-4 shift before rounding
# floors them exactly.
_GRAY = np.array([[0.2989, 0.587, 0.114, -0.49995]])
_LEVELS = np.arange(256, dtype=np.float32)

# One thread, set before OpenCV starts its pool in this process. The kernels run one image at a time in
# DataLoader workers that already use every core, and setting it later, in a worker forked after the
# parent's pool started, waits forever (measured with OpenCV 5.0).
cv2.setNumThreads(1)


def _to_uint8(levels):
    """float32 grey levels to uint8 as v2 casts them: clamped, then truncated."""
    return np.clip(levels, 0.0, 255.0).astype(np.uint8)


def _gray(image):
    """v2's uint8 grayscale, one channel: the weighted sum, floored."""
    return cv2.convertScaleAbs(cv2.transform(image.astype(np.float32), _GRAY))


def _per_channel(image, table):
    """Each channel through the lookup table `table(channel)` makes for it (None: left as it is)."""
    return cv2.merge(
        [channel if (t := table(channel)) is None else cv2.LUT(channel, t) for channel in cv2.split(image)]
    )


def resized_crop(image, top, left, height, width, size):
    """The box of a PIL RGB image resized to size x size by v2's own uint8 antialiased bilinear kernel.

    Faster than Pillow's resize, and equal to v2: Pillow's resize(box=...) also reads pixels outside the
    box, up to 89 grey levels away from v2 along the edges."""
    crop = np.array(image.crop((left, top, left + width, top + height)))
    resized = F.resize(torch.from_numpy(crop).permute(2, 0, 1), [size, size], antialias=True)
    return np.ascontiguousarray(resized.permute(1, 2, 0).numpy())


def brightness(image, factor):
    return cv2.LUT(image, _to_uint8(_LEVELS * np.float32(factor)))


def contrast(image, factor):
    # float32 as torch.mean: the sum of integer levels stays exact up to 2^24.
    mean = np.float32(cv2.sumElems(_gray(image))[0]) / np.float32(image.shape[0] * image.shape[1])
    return cv2.LUT(image, _to_uint8(_LEVELS * np.float32(factor) + mean * np.float32(1.0 - factor)))


def saturation(image, factor):
    gray = cv2.cvtColor(_gray(image), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, factor, gray, 1.0 - factor, _FLOOR)


def hue(image, shift):
    """Rotate hues by `shift` turns, in float32 HSV as v2 (OpenCV's float HSV is exact enough; its uint8 HSV
    quantises hue to 2 degrees)."""
    # Levels 0..255 rather than v2's 0..1: hue and saturation are scale-free, value follows the scale.
    hsv = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2HSV)
    # OpenCV's HSV -> RGB wraps hues above 360 degrees, but not negative ones.
    rgb = cv2.cvtColor(cv2.add(hsv, (360.0 * (shift % 1.0), 0.0, 0.0, 0.0)), cv2.COLOR_HSV2RGB)
    # v2 returns to uint8 as trunc(x * 255.999) for x in [0, 1].
    return cv2.convertScaleAbs(rgb, alpha=255.999 / 255.0, beta=_FLOOR)


def sharpness(image, factor):
    height, width = image.shape[:2]
    if height <= 2 or width <= 2:
        return image
    # PIL's SMOOTH filter (1s around a 5, over 13), rounded as v2 rounds it. A box sum plus 4x the centre is
    # faster than filter2D, and an integer over 13 is never a tie.
    sums = cv2.boxFilter(image, cv2.CV_16U, (3, 3), normalize=False) + (image.astype(np.uint16) << 2)
    out = cv2.addWeighted(image, factor, cv2.convertScaleAbs(sums, alpha=1.0 / 13.0), 1.0 - factor, _FLOOR)
    # v2 (like PIL) keeps the original one-pixel border.
    out[0], out[-1], out[:, 0], out[:, -1] = image[0], image[-1], image[:, 0], image[:, -1]
    return out


def grayscale(image):
    return cv2.cvtColor(_gray(image), cv2.COLOR_GRAY2RGB)


def gaussian_blur(image, kernel_size, sigma):
    kernel = cv2.getGaussianKernel(kernel_size, sigma)
    return cv2.sepFilter2D(image, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)


def hflip(image):
    return cv2.flip(image, 1)


def affine(image, matrix):
    """Warp by `matrix` (2 x 3), the inverse map in pixels from the image centre (v2.functional.affine's
    convention), nearest-neighbour, black outside."""
    height, width = image.shape[:2]
    matrix = np.asarray(matrix, dtype=np.float64)
    centre = np.array([(width - 1) * 0.5, (height - 1) * 0.5])
    # The same map in OpenCV's coordinates, which start at the top-left pixel's centre.
    opencv = np.column_stack((matrix[:, :2], matrix[:, 2] + centre - matrix[:, :2] @ centre))
    return cv2.warpAffine(
        image,
        opencv,
        (width, height),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def _stretch(channel):
    low, high = cv2.minMaxLoc(channel)[:2]
    if low == high:
        return None
    # v2 in float32: (x - low) / ((high - low) * (1 / 255)).
    return _to_uint8((_LEVELS - np.float32(low)) / (np.float32(high - low) * np.float32(1.0 / 255.0)))


def autocontrast(image):
    return _per_channel(image, _stretch)


def _equalization(channel):
    histogram = cv2.calcHist([channel], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    # PIL's (and v2's) step leaves out the pixels of the highest level present.
    step = (histogram.sum() - histogram[np.flatnonzero(histogram)[-1]]) // 255
    if step == 0:
        return None
    below = np.cumsum(histogram) - histogram
    return np.clip((below + step // 2) // step, 0, 255).astype(np.uint8)


def equalize(image):
    return _per_channel(image, _equalization)


def invert(image):
    return cv2.bitwise_not(image)


def solarize(image, threshold):
    """Invert the pixels at or above `threshold` (grey levels 0..256; 256 inverts none)."""
    if threshold > 255:
        return image
    inverted = cv2.threshold(image, math.ceil(threshold) - 1, 255, cv2.THRESH_BINARY)[1]
    return cv2.bitwise_xor(image, inverted)


def posterize(image, bits):
    """Keep the top `bits` bits (an integer, as Table 1 draws it) of each level."""
    bits = int(bits)
    if bits >= 8:
        return image
    return np.bitwise_and(image, np.uint8((0xFF << (8 - bits)) & 0xFF))
