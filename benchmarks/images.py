"""Photo-like images for the benchmarks and the tests that compare image kernels: closer to real
photos than pure noise, yet generated in milliseconds from a seed."""

import io

import numpy as np
from PIL import Image


def photo_like(height, width, rng, noise=12.0):
    """H x W x 3 uint8: smooth colour fields plus sensor-like noise. Closer to a photo than pure
    noise in JPEG size and decode cost, and in how much resampling filters differ on it."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    a, b, c = rng.uniform(2, 12, size=3)
    image = np.stack([np.sin(a * x + b * y), np.cos(b * x - c * y), np.sin(c * x * y + a)], axis=-1)
    image = (image + 1) * 100 + rng.normal(0, noise, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def photo_like_jpegs(count, width, height, quality=90, seed=0):
    """`count` photo_like images as JPEG bytes (quality 94 at 500x375: about 95 KiB, ImageNet's average)."""
    rng = np.random.default_rng(seed)
    jpegs = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(photo_like(height, width, rng)).save(buffer, format="JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    return jpegs
