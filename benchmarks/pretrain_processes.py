"""Pretraining images/s with one process and with N, through the real entry point.

Each row is a run of `python pretrain/main.py --num-gpus P` (one process per GPU, or per CPU
"device" with gloo), so everything between the processes counts: DDP's gradient all-reduce,
shuffle-BN's gathers (or SyncBatchNorm's, with --sync-bn), the metric all-reduce and the stop vote.
The global batch is --batch-size per process. A run logs two windows of --steps iterations each; images/s
is metrics.json's img_per_s of the second (the first holds the start-up). "scaling" is N processes'
images/s over N times one's.
--sync-bn needs GPUs (torch's SyncBatchNorm has no CPU kernel), and N processes need N GPUs on a GPU
machine (NCCL does not share one between processes); a row that cannot run says so.

    python benchmarks/pretrain_processes.py --processes 2                   # GPU: ResNet-50, 256 per GPU
    python benchmarks/pretrain_processes.py --processes 2 --sync-bn
    python benchmarks/pretrain_processes.py --arch resnet18 --batch-size 8 --size 64 --steps 4 --workers 1
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.pretrain_speed import write_jpeg_folder

REPO = Path(__file__).resolve().parent.parent


def run(processes, args, root, output_dir):
    """img/s of the timed window of one pretraining run with `processes` processes."""
    overrides = {
        "DATA.ROOT": root,
        "OUTPUT_DIR": output_dir,
        "MODEL.ARCH": args.arch,
        "SOLVER.BATCH_SIZE": args.batch_size * processes,
        "MODEL.QUEUE_SIZE": args.batch_size * processes * args.queue_batches,
        "DATA.NUM_WORKERS": args.workers,
        "SOLVER.MAX_ITER": 2 * args.steps,
        "LOG_PERIOD": args.steps,
        "MODEL.SYNC_BN": args.sync_bn,
    }
    if args.size:
        size = args.size
        overrides.update(
            {
                "DATA.KEY_VIEW": f"[{size}, 0.2, 1.0]",
                "DATA.WEAK_VIEWS": f"[[{size}, 0.2, 1.0]]",
                "DATA.STRONG_VIEWS": f"[[{size * 3 // 4}, 0.086, 0.429]]",
            }
        )
    command = [sys.executable, "pretrain/main.py", "--num-gpus", str(processes)]
    command += ["--config-file", f"pretrain/configs/{args.preset}.yaml"]
    command += [str(item) for pair in overrides.items() for item in pair]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        return f"failed: {result.stderr.strip().splitlines()[-1][:200] if result.stderr.strip() else result.returncode}"
    lines = [json.loads(line) for line in (Path(output_dir) / "metrics.json").read_text().splitlines()]
    return lines[-1]["img_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="clsa_single")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256, help="images per process and step")
    parser.add_argument("--queue-batches", type=int, default=16, help="the queue, in global batches")
    parser.add_argument("--size", type=int, help="key and weak crop size (default: the preset's views)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=max((os.cpu_count() or 2) // 2, 1), help="per process")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm instead of shuffle-BN (GPUs only)")
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name() if gpus else "CPU"
    print(
        f"{name} x {gpus or 1}, {os.cpu_count()} cores; {args.preset}, {args.arch}, {args.batch_size} per process, "
        f"{'SyncBN' if args.sync_bn else 'shuffle-BN'}, {args.steps} timed steps after {args.steps}"
    )
    print(f"{'processes':>9} {'global batch':>12} {'img/s':>9} {'per process':>11} {'scaling':>8}")
    if gpus and args.processes > gpus:  # no scaling to show: the one-process run alone would only cost time
        print(f"skipped: {args.processes} processes need {args.processes} GPUs, this machine has {gpus}")
        return
    # One epoch holds both windows: no epoch-end checkpoint or new workers inside them.
    images = (2 * args.steps + 4) * args.batch_size * args.processes
    with tempfile.TemporaryDirectory(prefix="clsa-bench-processes-") as work:
        write_jpeg_folder(Path(work) / "train", images)
        rates = {}
        for processes in (1, args.processes):
            if args.sync_bn and not gpus:
                rates[processes] = "skipped: SyncBatchNorm needs GPUs"
            else:
                rates[processes] = run(processes, args, Path(work) / "train", Path(work) / f"run_{processes}")
            rate = rates[processes]
            if isinstance(rate, str):
                print(f"{processes:>9} {args.batch_size * processes:>12} {rate}")
                continue
            one = rates.get(1)
            scaling = f"{rate / (processes * one):.0%}" if isinstance(one, float) else "-"
            print(
                f"{processes:>9} {args.batch_size * processes:>12} {rate:>9.1f} {rate / processes:>11.1f} {scaling:>8}"
            )


if __name__ == "__main__":
    main()
