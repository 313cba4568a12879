"""Our batched ops (pretrain/batched_ops.py) against kornia's, on the same batch and device.

Rows, each timed on one N x 3 x S x S float batch with per-image random parameters:
- weak stage: colour jitter (p=0.8), grayscale (p=0.2), Gaussian blur (p=0.5, sigma 0.1-2, kernel
  ~10% of S), flip: BatchedViews.weak_ops vs kornia.augmentation's same four transforms;
- rotate: per-image rotation by U(-30, 30) degrees, nearest, black fill: ops.affine vs
  kornia.augmentation.RandomRotation;
- equalize: v2's batched histogram (ops.equalize) vs kornia.enhance.equalize.
kornia is not a dependency of the suite: `pip install kornia==0.9.0` to run this.

    python benchmarks/kornia_compare.py [--batch-size 64] [--size 224] [--repeats 5]
"""
import argparse
import time

import torch

from pretrain import batched_ops as ops
from pretrain.augment import blur_kernel_size
from pretrain.batched_augment import BatchedViews, batch_generator


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
    params = BatchedViews(key_size=size).sample([size] * n, [size] * n, batch_generator(0, 0, 0))[0]
    angles = torch.empty(n, dtype=torch.float64).uniform_(-30, 30)

    def ours_weak(x):
        BatchedViews.weak_ops(x, params)
        return x

    def ours_rotate(x):
        return ops.affine(x, ops.affine_matrices(torch.full((n,), ops.AFFINE_OPS.index("Rotate")), angles, size, size))

    kernel = blur_kernel_size(size)
    kornia_weak = K.AugmentationSequential(
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5), K.RandomHorizontalFlip()).to(device)
    kornia_rotate = K.RandomRotation(30.0, resample="nearest", p=1.0).to(device)
    rows = [("weak stage", ours_weak, kornia_weak), ("rotate", ours_rotate, kornia_rotate),
            ("equalize", ops.equalize, kornia.enhance.equalize)]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; kornia {kornia.__version__}; batch {n} x 3 x {size} x {size}, {args.repeats} repeats")
    print(f"{'op':<12} {'ours img/s':>11} {'kornia img/s':>13} {'ours/kornia':>12}")
    for label, ours, theirs in rows:
        a, b = images_per_second(ours, images, args.repeats), images_per_second(theirs, images, args.repeats)
        print(f"{label:<12} {a:>11.0f} {b:>13.0f} {a / b:>12.2f}")


if __name__ == "__main__":
    main()
