"""The producer thread's host time per batch on the batched path, for the parts that need no GPU.

Per batch of ImageNet-like images (281-500 x 333-500) the producer (pretrain.data) splits the workers'
buffer into payloads, turns the workers' draws into the views' records, and works out each view's crop
boxes, plan and packed parameters before it launches the kernels. The launches themselves (about 3000
per Single batch at 256, benchmarks/view_traffic.py) and the decode's host part depend on the GPU and
its driver, and are left out. Rows, in ms per batch (min and median of --repeats):
- split: `split_encoded` of a collated buffer of ~110 KiB payloads (ImageNet's average JPEG);
- records: `view_params` from the workers' draws;
- boxes + plans: `crop_boxes`, `spec.plan` and `batched.pack` of every view;
- producer: their sum;
- draws (workers): `sampler.draws` for the batch, made in the DataLoader workers (the producer made
  them, with the records, before).

    python benchmarks/producer_time.py                       # clsa_single, 256 per GPU
    python benchmarks/producer_time.py --presets clsa_multi --batch-size 32
"""

import argparse
import statistics
import time

import numpy as np
import torch

from pretrain.config import preset_cfg
from pretrain.image_folders import split_encoded
from pretrain.views.batched import pack
from pretrain.views.sampler import crop_boxes, draws, records
from pretrain.views.spec import ViewSet, plan


def milliseconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return min(times), statistics.median(times)


def rows(preset, batch_size, repeats):
    view_set = ViewSet.from_cfg(preset_cfg(preset))
    rng = np.random.default_rng(0)
    heights, widths = rng.integers(281, 501, batch_size), rng.integers(333, 501, batch_size)
    lengths = rng.integers(60_000, 160_000, batch_size)
    buffer = torch.zeros(int(lengths.sum()), dtype=torch.uint8)
    shapes = torch.tensor([[length, 0, 0] for length in lengths.tolist()])
    uniforms = draws(view_set, 0, 0, range(batch_size))
    params = records(view_set, uniforms)

    def boxes_and_plans():
        for view, p in zip(view_set.views.flat(), params.flat()):
            crop_boxes(p, heights, widths)
            pack(plan(view, p))

    timed = {
        "split": lambda: split_encoded(buffer, shapes),
        "records": lambda: records(view_set, uniforms),
        "boxes + plans": boxes_and_plans,
    }
    out = {name: milliseconds(fn, repeats) for name, fn in timed.items()}
    out["producer"] = tuple(sum(value[i] for value in out.values()) for i in range(2))
    out["draws (workers)"] = milliseconds(lambda: draws(view_set, 0, 0, range(batch_size)), repeats)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["clsa_single"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"{'preset':<12} {'per GPU':>7} {'part':<16} {'min ms':>7} {'median ms':>9}")
    for preset in args.presets:
        for part, (low, median) in rows(preset, args.batch_size, args.repeats).items():
            print(f"{preset:<12} {args.batch_size:>7} {part:<16} {low:>7.1f} {median:>9.1f}")


if __name__ == "__main__":
    main()
