"""Pretraining images/s: the training step alone, and end to end through each data path, in one run.

Rows (images/s counts source images, each with its key and query views):
- "step fp32", "step bf16": pretrain.engine.train_step on random views already on the device, in fp32
  and in bf16 autocast + channels_last (the run's default on a GPU);
- "per_image", "batched": DATA.AUGMENT's two paths end to end, with the run's own code
  (pretrain.data.build_data): JPEG files -> DataLoader -> views on the device -> bf16 train_step.
  "vs step" is their share of "step bf16": 100% means the data path costs nothing.
- with --augment-only (the default without a GPU), the two data paths without the model, on the same
  cores: DataLoader workers per image vs the batched path in the training process.
- with --trace FILE, 3 iterations of the batched path under torch.profiler, split into ipc (receiving
  the batch from the workers), decode, views and step, each run in turn and timed to its end on the
  device; the Chrome trace goes to FILE (gzipped if it ends in .gz).
--paths picks rows (step_fp32, step_bf16, per_image, batched); "vs step" needs step_bf16, measured in
the same run. On a GPU the run is set up as training sets it up: cudnn.benchmark on, and --compile
compiles each encoder for static shapes (pretrain/engine.py).
The files are synthetic 500x375 JPEGs of about 95 KiB (ImageNet's average), read from the page cache;
one in 16 is progressive and one in 128 CMYK (the DataLoader workers decode those on the batched path).
Peak GPU memory (allocated and reserved) is reported for each row; a row that fails prints its error and
the others still run. The end-to-end rows time only batches made inside the timed window: their warm-up
also uses up the batches the workers prefetched.

    python benchmarks/pretrain_speed.py                          # GPU: ResNet-50, batch 256
    python benchmarks/pretrain_speed.py --compile                # with torch.compile'd encoders
    python benchmarks/pretrain_speed.py --batch-size 32 --presets clsa_single --trace trace.json.gz
    python benchmarks/pretrain_speed.py --presets clsa_multi --checkpoint-strong
    python benchmarks/pretrain_speed.py --batch-size 32 --steps 16 --warmup 4 --workers 2   # CPU: data paths
"""

import argparse
import gc
import io
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.images import photo_like_jpegs
from pretrain.builder import CLSA
from pretrain.config import preset_cfg
from pretrain.data import DEPTH as PREFETCH_DEPTH
from pretrain.data import DeviceBatches, build_data
from pretrain.engine import train_step
from pretrain.image_folders import decode_batch
from pretrain.views.spec import ViewSet

UNIQUE_JPEGS = 256
PROGRESSIVE_EVERY, CMYK_EVERY = 16, 128
PROFILED_ITERATIONS = 3
PATHS = ("step_fp32", "step_bf16", "per_image", "batched")


def write_jpeg_folder(root, count):
    """An ImageFolder of `count` files: UNIQUE_JPEGS distinct JPEGs, repeated through symlinks. One in
    PROGRESSIVE_EVERY is progressive and one in CMYK_EVERY CMYK, which nvjpeg does not batch: the
    batched path's DataLoader workers decode those on the CPU."""
    jpegs = photo_like_jpegs(min(count, UNIQUE_JPEGS), 500, 375, quality=94)
    for i in range(len(jpegs)):
        if i % PROGRESSIVE_EVERY == PROGRESSIVE_EVERY - 1 or i % CMYK_EVERY == CMYK_EVERY // 2:
            buffer = io.BytesIO()
            with Image.open(io.BytesIO(jpegs[i])) as image:
                cmyk = i % CMYK_EVERY == CMYK_EVERY // 2
                image.convert("CMYK" if cmyk else "RGB").save(buffer, "JPEG", quality=94, progressive=not cmyk)
            jpegs[i] = buffer.getvalue()
    for i in range(count):
        folder = Path(root) / f"n{i % 10:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.JPEG"
        if i < len(jpegs):
            path.write_bytes(jpegs[i])
        else:
            os.symlink(Path(root) / f"n{i % len(jpegs) % 10:08d}" / f"{i % len(jpegs):06d}.JPEG", path)
    return sum(map(len, jpegs)) / len(jpegs)


def make_model(args, device, fast):
    torch.manual_seed(0)
    model = CLSA(args.arch, queue_size=args.queue_size, checkpoint_strong=args.checkpoint_strong)
    model.to(device, memory_format=torch.channels_last if fast else torch.contiguous_format)
    if args.compile:
        model.encoder_q.compile(dynamic=False)  # as pretrain/engine.py: one graph per view size
        model.encoder_k.compile(dynamic=False)
    optimizer = torch.optim.SGD(
        model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4, fused=device.type == "cuda"
    )
    return model, optimizer


class Timer:
    """Wall time of the steps after `warmup`, with the device synchronised at both ends; peak memory."""

    def __init__(self, device, warmup):
        self.device, self.warmup, self.start = device, warmup, None

    def tick(self, step):
        if step == self.warmup:
            self.sync()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            self.start = time.perf_counter()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def images_per_second(self, steps, batch_size):
        self.sync()
        return steps * batch_size / (time.perf_counter() - self.start)

    def peak_gib(self):
        """(allocated, reserved) peak GiB of the timed steps: the caching allocator's reserve is what
        another process on the GPU cannot have."""
        if self.device.type != "cuda":
            return float("nan"), float("nan")
        return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30


def step_only(preset, args, device, fast):
    memory_format = torch.channels_last if fast else torch.contiguous_format
    model, optimizer = make_model(args, device, fast)
    batch = ViewSet.from_cfg(preset_cfg(preset)).views.map(
        lambda view: torch.randn(args.batch_size, 3, view.size, view.size, device=device).contiguous(
            memory_format=memory_format
        )
    )
    timer = Timer(device, args.warmup)
    for step in range(args.warmup + args.steps):
        timer.tick(step)
        train_step(model, optimizer, batch, fast)
    return timer.images_per_second(args.steps, args.batch_size), timer.peak_gib()


def run_config(preset, augment, args, root):
    cfg = preset_cfg(preset)
    cfg.merge_from_list(
        [
            "DATA.ROOT",
            str(root),
            "DATA.AUGMENT",
            augment,
            "DATA.NUM_WORKERS",
            args.workers,
            "SOLVER.BATCH_SIZE",
            args.batch_size,
        ]
    )
    return cfg


def end_to_end(preset, augment, args, device, root):
    """Images/s of DATA.AUGMENT `augment` through the bf16 step (or without it, --augment-only)."""
    fast = device.type == "cuda"
    memory_format = torch.channels_last if fast else torch.contiguous_format
    cfg = run_config(preset, augment, args, root)
    dtype = torch.bfloat16 if fast else torch.float32
    data = build_data(cfg, ViewSet.from_cfg(cfg), device, 0, 1, dtype, memory_format)
    data.sampler.set_epoch(0)
    data.dataset.set_epoch(0)
    model = None if args.augment_only else make_model(args, device, fast)
    # The workers fill their queue during the warm-up (a first compiled step takes long): the timed
    # window starts once those batches are used up, so that it counts only batches made in it.
    warmup = args.warmup + prefetched(args)
    timer = Timer(device, warmup)
    for step, views in enumerate(DeviceBatches(data)):
        timer.tick(step)
        if model:
            train_step(*model, views, fast)
        if step + 1 == warmup + args.steps:
            break
    return timer.images_per_second(args.steps, args.batch_size), timer.peak_gib()


PROFILED_PARTS = ("ipc", "decode", "views", "step")


def profile_batched(preset, args, device, root, trace):
    """Milliseconds per part of PROFILED_PARTS over PROFILED_ITERATIONS batched iterations, each part
    run in turn (no producer thread) and timed to its end on the device, under torch.profiler, which
    writes a Chrome trace to `trace` with one range per part."""
    from torch.profiler import ProfilerActivity, profile, record_function

    fast = device.type == "cuda"
    memory_format = torch.channels_last if fast else torch.contiguous_format
    cfg = run_config(preset, "batched", args, root)
    data = build_data(cfg, ViewSet.from_cfg(cfg), device, 0, 1)
    data.sampler.set_epoch(0)
    data.dataset.set_epoch(0)
    model = None if args.augment_only else make_model(args, device, fast)
    loader, totals = iter(data.loader), dict.fromkeys(PROFILED_PARTS, 0.0)

    def timed(part, fn, *fn_args):
        with record_function(part):
            start = time.perf_counter()
            result = fn(*fn_args)
            if fast:
                torch.cuda.synchronize()
            totals[part] += time.perf_counter() - start
        return result

    def iteration():
        encoded, indices, uniforms = timed("ipc", next, loader)
        images, used = timed("decode", decode_batch, encoded, indices, data.dataset, device)
        params = data.dataset.view_params(used, (indices.tolist(), uniforms))
        dtype = torch.bfloat16 if fast else torch.float32
        views = timed("views", data.batched_views, images, params, dtype, memory_format)
        if model:
            timed("step", train_step, *model, views, fast)

    for _ in range(args.warmup):
        iteration()
    totals = dict.fromkeys(PROFILED_PARTS, 0.0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if fast else [])
    with profile(activities=activities) as profiler:
        for _ in range(PROFILED_ITERATIONS):
            iteration()
    profiler.export_chrome_trace(str(trace))
    return {part: 1000 * seconds / PROFILED_ITERATIONS for part, seconds in totals.items()}


def prefetched(args):
    """Batches held ready ahead of the step: the DataLoader workers' (their prefetch factor, 2, each),
    the producer thread's queue and the one it is making."""
    return 2 * args.workers + PREFETCH_DEPTH + 1


def measured(fn, *args):
    """fn(*args), or the exception that stopped it, so that one failing row (CLSA-Multi in fp32 at batch
    256 needs ~119 GiB) does not cost the others; the memory is freed either way for the next row."""
    try:
        return fn(*args)
    except Exception as error:  # any failure, reported in its row
        return error
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (one process)")
    parser.add_argument("--queue-size", type=int, default=65536)
    parser.add_argument("--presets", nargs="+", default=["clsa_single", "clsa_multi", "mocov2"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers")
    parser.add_argument("--compile", action="store_true", help="torch.compile both encoders")
    parser.add_argument("--checkpoint-strong", action="store_true", help="MODEL.CHECKPOINT_STRONG")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="the rows to measure")
    parser.add_argument(
        "--trace",
        type=Path,
        help=f"also profile {PROFILED_ITERATIONS} batched iterations of the first preset, split into "
        f"{', '.join(PROFILED_PARTS)}, and write their Chrome trace here",
    )
    parser.add_argument(
        "--augment-only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the data paths without the model (default: only without a GPU)",
    )
    args = parser.parse_args()
    args.queue_size -= args.queue_size % args.batch_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training: fixed view sizes
    if args.augment_only is None:
        args.augment_only = device.type == "cpu"
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    with tempfile.TemporaryDirectory(prefix="clsa-bench-jpegs-") as root:
        # Enough files that the loader still has batches to prefetch at the end of the timed window.
        mean_size = write_jpeg_folder(root, (args.warmup + args.steps + 2 * prefetched(args)) * args.batch_size)
        print(
            f"{name}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {args.workers} workers; "
            f"{args.arch}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}; "
            f"JPEGs 500x375 of {mean_size / 1024:.0f} KiB; compile {args.compile}, "
            f"checkpoint strong {args.checkpoint_strong}{', augmentation only' if args.augment_only else ''}"
        )
        print(f"{'preset':<12} {'path':<10} {'img/s':>8} {'vs step':>8} {'peak GiB':>9} {'reserved':>9}")
        for preset in args.presets:
            rows = {}
            if not args.augment_only:
                for path, fast in (("step_fp32", False), ("step_bf16", device.type == "cuda")):
                    if path in args.paths:
                        rows[path.replace("_", " ")] = measured(step_only, preset, args, device, fast)
            for augment in ("per_image", "batched"):
                if augment in args.paths:
                    rows[augment] = measured(end_to_end, preset, augment, args, device, root)
            step = rows.get("step bf16")
            step = None if isinstance(step, Exception) else step
            for path, row in rows.items():
                if isinstance(row, Exception):
                    reason = "out of GPU memory" if isinstance(row, torch.OutOfMemoryError) else repr(row)
                    print(f"{preset:<12} {path:<10} failed: {reason.splitlines()[0][:200]}")
                    continue
                share = f"{row[0] / step[0]:.0%}" if step else "-"
                print(f"{preset:<12} {path:<10} {row[0]:>8.1f} {share:>8} {row[1][0]:>9.1f} {row[1][1]:>9.1f}")
            both = {"per_image", "batched"} <= rows.keys()
            if args.augment_only and both and not any(isinstance(row, Exception) for row in rows.values()):
                print(f"{preset:<12} batched / per_image: {rows['batched'][0] / rows['per_image'][0]:.2f}x")
        if args.trace:
            parts = measured(profile_batched, args.presets[0], args, device, root, args.trace)
            if isinstance(parts, Exception):
                print(f"profile failed: {parts!r}"[:300])
            else:
                split = ", ".join(f"{part} {ms:.1f}" for part, ms in parts.items())
                print(f"{args.presets[0]} batched, ms per iteration: {split}; trace {args.trace}")


if __name__ == "__main__":
    main()
