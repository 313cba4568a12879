"""Does the producer thread hide the batched data path behind the step? Measured on the CPU.

The batched path (DATA.AUGMENT batched) receives each batch's JPEG bytes from the DataLoader
workers, decodes them and makes every view in the training process. On a GPU the host then waits
while the step's kernels run. Here a fake step that waits a fixed time (time.sleep releases the GIL,
as a wait for the GPU does) stands for those kernels. Two rows, in one run:
- "serial" (depth 0): each batch is made when the loop asks for it, so a batch costs make + step;
- "producer" (pretrain.data.DEPTH): the producer thread makes the next batches during the step,
  so a batch costs max(make, step) if the two really overlap.
By default the step lasts as long as making a batch, measured first. That is the case where overlap
matters most: the ideal ratio is then 2x.

    python benchmarks/prefetch_overlap.py                                  # CLSA-Single, batch 32
    python benchmarks/prefetch_overlap.py --preset clsa_multi --step-ms 400
"""

import argparse
import os
import tempfile
import time

import torch

from benchmarks.pretrain_speed import write_jpeg_folder
from pretrain.config import preset_cfg
from pretrain.data import DEPTH, DeviceBatches, build_data
from pretrain.views.spec import ViewSet


def ms_per_batch(cfg, depth, step_s, warmup, steps):
    """Wall milliseconds per batch after `warmup` batches, with a step of `step_s` seconds."""
    device = torch.device("cpu")
    data = build_data(cfg, ViewSet.from_cfg(cfg), device, 0, 1)
    data.sampler.set_epoch(0)
    data.dataset.set_epoch(0)
    start = None
    for index, _ in enumerate(DeviceBatches(data, depth)):
        if index == warmup:
            start = time.perf_counter()
        time.sleep(step_s)
        if index + 1 == warmup + steps:
            break
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="clsa_single")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (read the files)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--step-ms", type=float, help="the fake step's length (default: one batch's making)")
    args = parser.parse_args()
    # Every batch the DataLoader, the producer and the rows use comes from one epoch of this folder.
    batches = args.warmup + args.steps + 2 * args.workers + DEPTH + 1
    with tempfile.TemporaryDirectory(prefix="clsa-bench-jpegs-") as root:
        write_jpeg_folder(root, batches * args.batch_size)
        cfg = preset_cfg(args.preset)
        cfg.merge_from_list(
            [
                "DATA.ROOT",
                root,
                "DATA.AUGMENT",
                "batched",
                "DATA.NUM_WORKERS",
                str(args.workers),
                "SOLVER.BATCH_SIZE",
                str(args.batch_size),
            ]
        )
        make_ms = ms_per_batch(cfg, 0, 0.0, args.warmup, args.steps)
        step_ms = args.step_ms if args.step_ms is not None else make_ms
        serial = ms_per_batch(cfg, 0, step_ms / 1000, args.warmup, args.steps)
        produced = ms_per_batch(cfg, DEPTH, step_ms / 1000, args.warmup, args.steps)
    print(
        f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {args.workers} workers; "
        f"{args.preset}, batched views, batch {args.batch_size}, {args.steps} timed batches after {args.warmup}"
    )
    print(f"making a batch alone: {make_ms:.0f} ms; fake step: {step_ms:.0f} ms")
    print(f"{'row':<10} {'ms/batch':>9} {'ideal':>7}")
    print(f"{'serial':<10} {serial:>9.0f} {make_ms + step_ms:>7.0f}")
    print(f"{'producer':<10} {produced:>9.0f} {max(make_ms, step_ms):>7.0f}")
    ideal = (make_ms + step_ms) / max(make_ms, step_ms)
    print(f"producer / serial: {serial / produced:.2f}x faster (ideal {ideal:.2f}x)")


if __name__ == "__main__":
    main()
