"""Our batched kernels (pretrain/views/batched_ops.py) against the alternatives, on the same batch and device.

Rows, each timed on one N x 3 x S x S float batch with per-image random parameters:
- crops: N random crops of 500x375 images resized to S by PaddedImages.crops: one roi_align over
  the padded batch vs one antialiased v2 resize per crop;
- weak stage: colour jitter (p=0.8), grayscale (p=0.2), Gaussian blur (p=0.5, sigma 0.1-2, kernel
  ~10% of S), flip: a weak view's steps of spec.plan run by batched.run_plan vs kornia.augmentation's
  same four transforms;
- rotate: per-image rotation by U(-30, 30) degrees, nearest, black fill: ops.affine vs
  kornia.augmentation.RandomRotation;
- equalize: v2's batched histogram (ops.equalize) vs kornia.enhance.equalize.
kornia is not a dependency of the suite: `pip install kornia==0.9.0` to run this.

    python benchmarks/batched_ops_speed.py [--batch-size 64] [--size 224] [--repeats 5]
"""

import argparse
import time

import numpy as np
import torch

from benchmarks.images import photo_like
from pretrain.views import batched_ops as ops
from pretrain.views.batched import PaddedImages, run_plan
from pretrain.views.sampler import crop_boxes, sample
from pretrain.views.spec import Views, ViewSet, ViewSpec, affine_matrices, blur_kernel_size, plan


def one_view(size):
    return ViewSpec(size, (0.2, 1.0))


def one_view_params(n, size):
    """The sampler's records of n images for one weak view of `size`."""
    return sample(ViewSet(Views(one_view(size), [], [])), 0, 0, range(n)).key


def images_per_second(fn, images, repeats):
    fn(images.clone())
    if images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(images.clone())
    if images.is_cuda:
        torch.cuda.synchronize()
    return repeats * len(images) / (time.perf_counter() - start)


def crop_rows(n, size, device, repeats):
    """(roi_align img/s, per-crop resize img/s) for n crops of 500x375 photo-like images."""
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(photo_like(375, 500, rng)).permute(2, 0, 1).to(device) for _ in range(n)]
    boxes = crop_boxes(one_view_params(n, size), [375] * n, [500] * n)
    speeds = []
    for method in ("roi_align", "interpolate"):
        padded = PaddedImages(images, crop_method=method)
        speeds.append(
            images_per_second(
                lambda _, padded=padded: padded.crops(boxes, size), torch.empty(n, device=device), repeats
            )
        )
    return speeds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import kornia
    import kornia.augmentation as K

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n, size = args.batch_size, args.size
    images = torch.rand(n, 3, size, size, device=device)
    params = one_view_params(n, size)
    rotations = torch.from_numpy(
        affine_matrices(["Rotate"] * n, np.random.default_rng(0).uniform(-30, 30, n), size, size)
    )

    def ours_weak(x):
        run_plan(x, plan(one_view(size), params))
        return x

    def ours_rotate(x):
        return ops.affine(x, rotations)

    kernel = blur_kernel_size(size)
    kornia_weak = K.AugmentationSequential(
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5),
        K.RandomHorizontalFlip(),
    ).to(device)
    kornia_rotate = K.RandomRotation(30.0, resample="nearest", p=1.0).to(device)
    rows = [
        ("weak stage", ours_weak, kornia_weak),
        ("rotate", ours_rotate, kornia_rotate),
        ("equalize", ops.equalize, kornia.enhance.equalize),
    ]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; kornia {kornia.__version__}; batch {n} x 3 x {size} x {size}, {args.repeats} repeats")
    roi, interpolate = crop_rows(n, size, device, args.repeats)
    print(f"{'op':<12} {'ours img/s':>11} {'other img/s':>13} {'ratio':>7}")
    print(f"{'crops':<12} {roi:>11.0f} {interpolate:>13.0f} {roi / interpolate:>7.2f}   (other: one resize per crop)")
    for label, ours, theirs in rows:
        a, b = images_per_second(ours, images, args.repeats), images_per_second(theirs, images, args.repeats)
        print(f"{label:<12} {a:>11.0f} {b:>13.0f} {a / b:>7.2f}   (other: kornia)")


if __name__ == "__main__":
    main()
