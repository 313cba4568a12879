"""Seconds per training step of the learning check's recipes, by backbone, on the CPU as the check runs.

The check (pretrain/learning_check.py) runs two pretrainings side by side, one torch thread each, so a
step's time sets its wall time. Each row times pretrain.engine.train_step on the recipe's own model,
optimizer and view sizes (pretrain/configs/cpu/learning_check[_mocov2].yaml), with random views in
place of the data path, whose views are made on the producer thread during the step:
- "fp32": as the check runs on the CPU;
- "bf16": bf16 autocast and channels_last, as on a GPU (SOLVER.AMP, SOLVER.CHANNELS_LAST).
"vs first" is the row's speed against the first arch's fp32 row of the same method, measured in the
same run. Run it alone on the machine: another process on the cores slows every row.

    python benchmarks/learning_check_step.py                                  # the two recipes, 3 archs
    python benchmarks/learning_check_step.py --archs resnet18 resnet18_w32 --threads 2
"""

import argparse
import statistics
import time

import torch

from pretrain.engine import build_model, build_optimizer, train_step
from pretrain.learning_check import RECIPES, recipe_config
from pretrain.views.spec import ViewSet


def seconds_per_step(cfg, amp, steps, warmup):
    """Median seconds of `steps` train steps after `warmup`, in bf16 autocast + channels_last if `amp`."""
    memory_format = torch.channels_last if amp else torch.contiguous_format
    model = build_model(cfg, torch.device("cpu"), memory_format, world_size=1)
    optimizer = build_optimizer(cfg, model)
    batch = cfg.SOLVER.BATCH_SIZE
    views = ViewSet.from_cfg(cfg).views.map(
        lambda view: torch.rand(batch, 3, view.size, view.size).contiguous(memory_format=memory_format)
    )
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        train_step(model, optimizer, views, amp)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet18_w32", "resnet18_w16"])
    parser.add_argument("--methods", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the check: 1 per run)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU, torch threads {args.threads}; median of {args.steps} steps after {args.warmup}")
    print(f"{'method':<8} {'arch':<14} {'precision':<9} {'s/step':>7} {'vs first':>9}")
    for method in args.methods:
        baseline = None
        for arch in args.archs:
            cfg = recipe_config(method, ["MODEL.ARCH", arch])
            for precision, amp in (("fp32", False), ("bf16", True)):
                seconds = seconds_per_step(cfg, amp, args.steps, args.warmup)
                baseline = baseline or seconds
                print(f"{method:<8} {arch:<14} {precision:<9} {seconds:>7.3f} {baseline / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
