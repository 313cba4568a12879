"""Training-step images/s of CLSA-Single, CLSA-Multi and MoCo v2 on synthetic inputs: fp32 vs bf16 + channels_last.

The step is pretrain.main.train_step (forward of every view, losses, backward, SGD), timed after
warm-up steps with the device synchronised only at the ends. Images/s counts source images (one
key + its query views each). The data pipeline's speed per worker is benchmarks/pretrain_data_speed.py.

    python benchmarks/pretrain_speed.py                                      # GPU: ResNet-50, batch 256
    python benchmarks/pretrain_speed.py --arch resnet18 --batch-size 16 --crop-scale 0.25 --steps 3   # CPU
"""
import argparse
import time

import torch

from pretrain.augment import PRESET_VIEWS
from pretrain.builder import CLSA
from pretrain.main import train_step


def measure(preset, args, device, fast):
    views = PRESET_VIEWS[preset]
    sizes = [224] + [size for size, _ in views["weak"]] + [size for size, _ in views["strong"]]
    sizes = [max(int(size * args.crop_scale), 16) for size in sizes]
    memory_format = torch.channels_last if fast else torch.contiguous_format
    torch.manual_seed(0)
    model = CLSA(args.arch, queue_size=args.queue_size).to(device, memory_format=memory_format)
    if args.compile:
        model.encoder_q.compile()
        model.encoder_k.compile()
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4,
                                fused=device.type == "cuda")
    batch = [torch.randn(args.batch_size, 3, s, s, device=device).contiguous(memory_format=memory_format)
             for s in sizes]
    for _ in range(args.warmup):
        train_step(model, optimizer, batch, len(views["weak"]), fast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        out = train_step(model, optimizer, batch, len(views["weak"]), fast)
    out["loss"].item()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (one process)")
    parser.add_argument("--queue-size", type=int, default=65536)
    parser.add_argument("--crop-scale", type=float, default=1.0, help="shrink every crop size (CPU runs)")
    parser.add_argument("--presets", nargs="+", default=["clsa_single", "clsa_multi", "mocov2"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile both encoders")
    args = parser.parse_args()
    args.queue_size -= args.queue_size % args.batch_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; {args.arch}, batch {args.batch_size}, queue {args.queue_size}, crops x{args.crop_scale}, "
          f"{args.steps} timed steps after {args.warmup}")
    print(f"{'preset':<12} {'fp32 img/s':>11} {'bf16+cl img/s':>14} {'ratio':>6}")
    for preset in args.presets:
        fp32 = measure(preset, args, device, fast=False)
        fast = measure(preset, args, device, fast=True)
        print(f"{preset:<12} {fp32:>11.1f} {fast:>14.1f} {fast / fp32:>6.2f}")


if __name__ == "__main__":
    main()
