"""Per-core speed of the per-image views (DATA.AUGMENT per_image) against the reference systems' pipelines.

One process and one thread, as one DataLoader worker; each image is decoded from JPEG bytes and turned
into all its views. Rounds interleave the pipelines on the same JPEGs and each row reports its median
round, so a load change on the machine hits all rows alike.
- ours: pretrain.views.per_image.PerImageViews with the sampler's record of each image, for the
  presets mocov2, clsa_single and clsa_multi; views stay uint8 (the training device normalises them);
- the official CLSA pipelines as their training script builds them (benchmarks/reference_pipelines.py):
  5 views for Single (2 of them unused), 11 for Multi, normalised float tensors;
- MoCo v2's own two-view PIL pipeline.

    python benchmarks/pretrain_data_speed.py [--images 100] [--rounds 5] [--size 500x375]
"""

import argparse
import io
import statistics
import time

import cv2
import torch
from PIL import Image

from benchmarks.images import photo_like_jpegs
from benchmarks.reference_pipelines import clsa_reference_pipeline, moco_v2_pipeline
from pretrain.config import preset_cfg
from pretrain.views.per_image import PerImageViews
from pretrain.views.sampler import sample
from pretrain.views.spec import ViewSet

# (ours, the reference it is compared with, the speed-up over it that the suite aims for per core)
COMPARISONS = (
    ("clsa_single", "reference CLSA-Single (5 views)", 2.0),
    ("clsa_multi", "reference CLSA-Multi (11 views)", 2.0),
    ("mocov2", "MoCo v2's PIL pipeline", 1.3),
)


def ours(preset):
    view_set = ViewSet.from_cfg(preset_cfg(preset))
    make_views = PerImageViews(view_set)
    counter = iter(range(10**9))
    return lambda image: make_views(image, sample(view_set, 0, 0, [next(counter)])).flat()


def seconds_per_image(pipeline, jpegs):
    start = time.perf_counter()
    for image_bytes in jpegs:
        with Image.open(io.BytesIO(image_bytes)) as image:
            pipeline(image.convert("RGB"))
    return (time.perf_counter() - start) / len(jpegs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="JPEGs timed per pipeline and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", default="500x375", help="JPEG size WxH (ImageNet's typical size)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    cv2.setNumThreads(1)
    torch.manual_seed(0)
    width, height = map(int, args.size.split("x"))
    jpegs = photo_like_jpegs(args.images, width, height)

    pipelines = {
        "clsa_single": ours("clsa_single"),
        "clsa_multi": ours("clsa_multi"),
        "mocov2": ours("mocov2"),
        "reference CLSA-Single (5 views)": clsa_reference_pipeline("single"),
        "reference CLSA-Multi (11 views)": clsa_reference_pipeline("multi"),
        "MoCo v2's PIL pipeline": moco_v2_pipeline(),
    }
    first = Image.open(io.BytesIO(jpegs[0])).convert("RGB")
    views = {name: len(pipeline(first)) for name, pipeline in pipelines.items()}
    rounds = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, pipeline in pipelines.items():
            rounds[name].append(seconds_per_image(pipeline, jpegs))
    ms = {name: statistics.median(times) * 1000 for name, times in rounds.items()}

    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, Pillow {Image.__version__}; 1 thread")
    print(f"{args.images} JPEGs of {width}x{height}, median of {args.rounds} interleaved rounds")
    print(f"{'pipeline':34s} {'views':>5s} {'ms/img':>8s} {'img/s':>8s}")
    for name in pipelines:
        print(f"{name:34s} {views[name]:5d} {ms[name]:8.2f} {1000 / ms[name]:8.1f}")
    for name, reference, target in COMPARISONS:
        ratio = ms[reference] / ms[name]
        print(f"{name} vs {reference}: {ratio:.2f}x (target {target}x: {'met' if ratio >= target else 'NOT met'})")


if __name__ == "__main__":
    main()
