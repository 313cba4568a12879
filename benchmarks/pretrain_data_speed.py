"""Per-image speed of the pretraining data pipeline in one process (= one DataLoader worker).

Each image is decoded from JPEG bytes and turned into all its views, as a DataLoader worker does.
Rows:
- our presets (mocov2, clsa_single, clsa_multi);
- clsa_single with the views the reference code builds (key, weak 224+96, strong 224+96; two unused);
- MoCo v2's own pipeline (torchvision.transforms v1 on PIL, PIL's Gaussian blur) for the 2 views;
- the Gaussian blur alone on a 224 and a 96 crop: v2.GaussianBlur's 2-D convolution against
  pretrain.augment.MatmulGaussianBlur.

    python benchmarks/pretrain_data_speed.py [--images 200] [--size 500x375]
"""

import argparse
import io
import time

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as v1
from torchvision.transforms import v2

from common.synthetic import photo_like_jpegs
from pretrain.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESET_VIEWS,
    MatmulGaussianBlur,
    MultiViewTransform,
    blur_kernel_size,
)

REFERENCE_SINGLE = "clsa_single, reference's 5 views"
MOCO_PIL = "mocov2, MoCo's PIL pipeline"


def mocov2_pil_pipeline():
    def pil_blur(image):
        return image.filter(ImageFilter.GaussianBlur(radius=float(torch.empty(()).uniform_(0.1, 2.0))))

    one_view = v1.Compose(
        [
            v1.RandomResizedCrop(224, scale=(0.2, 1.0)),
            v1.RandomApply([v1.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v1.RandomGrayscale(p=0.2),
            v1.RandomApply([pil_blur], p=0.5),
            v1.RandomHorizontalFlip(),
            v1.ToTensor(),
            v1.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return lambda image: [one_view(image), one_view(image)]


def images_per_second(pipeline, jpegs, warmup):
    def run(image_bytes):
        with Image.open(io.BytesIO(image_bytes)) as image:
            return pipeline(image.convert("RGB"))

    for image_bytes in jpegs[:warmup]:
        run(image_bytes)
    start = time.perf_counter()
    for image_bytes in jpegs:
        run(image_bytes)
    return len(jpegs) / (time.perf_counter() - start)


def blur_milliseconds(blur, size, repeats=50):
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    blur(image)
    start = time.perf_counter()
    for _ in range(repeats):
        blur(image)
    return (time.perf_counter() - start) / repeats * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images timed per pipeline")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--size", default="500x375", help="JPEG size WxH (ImageNet's typical size)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    torch.manual_seed(0)
    width, height = map(int, args.size.split("x"))
    jpegs = photo_like_jpegs(args.images, width, height)

    single = PRESET_VIEWS["clsa_single"]
    crops = single["weak"] + single["strong"]
    pipelines = {
        "mocov2": MultiViewTransform.from_preset("mocov2"),
        "clsa_single": MultiViewTransform.from_preset("clsa_single"),
        "clsa_multi": MultiViewTransform.from_preset("clsa_multi"),
        REFERENCE_SINGLE: MultiViewTransform(weak=crops, strong=crops),
        MOCO_PIL: mocov2_pil_pipeline(),
    }
    print(f"torch {torch.__version__}, 1 thread, {args.images} JPEGs of {width}x{height}")
    print(f"{'pipeline':36s} {'views':>5s} {'img/s':>8s} {'ms/img':>8s}")
    speeds = {}
    for name, pipeline in pipelines.items():
        views = len(pipeline(Image.open(io.BytesIO(jpegs[0])).convert("RGB")))
        speeds[name] = images_per_second(pipeline, jpegs, args.warmup)
        print(f"{name:36s} {views:5d} {speeds[name]:8.1f} {1000 / speeds[name]:8.2f}")
    print(f"clsa_single / {REFERENCE_SINGLE}: {speeds['clsa_single'] / speeds[REFERENCE_SINGLE]:.2f}x")
    print(f"mocov2 / {MOCO_PIL}: {speeds['mocov2'] / speeds[MOCO_PIL]:.2f}x")
    for size in (224, 96):
        kernel = blur_kernel_size(size)
        conv, matmul = (
            blur_milliseconds(cls(kernel, sigma=(0.1, 2.0)), size) for cls in (v2.GaussianBlur, MatmulGaussianBlur)
        )
        print(
            f"blur {size} px, kernel {kernel}: v2.GaussianBlur {conv:.2f} ms, MatmulGaussianBlur {matmul:.2f} ms, "
            f"{conv / matmul:.1f}x"
        )


if __name__ == "__main__":
    main()
