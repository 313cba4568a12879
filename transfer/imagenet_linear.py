"""ImageNet linear evaluation (MoCo / CLSA protocol) of a frozen backbone.

    python transfer/imagenet_linear.py --weights CKPT --data ROOT [--preset clsa|moco] [--num-gpus N]
    torchrun --nproc_per_node 8 transfer/imagenet_linear.py --weights CKPT --data ROOT
    srun --ntasks-per-node 8 python transfer/imagenet_linear.py --weights CKPT --data ROOT

ROOT holds train/ and val/ in ImageFolder layout. The backbone stays in eval mode (BN statistics
frozen) with no gradient; only fc learns: N(0, 0.01) init, bias 0, SGD momentum 0.9, weight decay 0,
batch 256 in all (split over processes), 100 epochs, and the preset's schedule: clsa (the CLSA code)
lr 10 with per-epoch cosine decay; moco (MoCo's main_lincls) lr 30, x0.1 at epochs 60 and 80 (at 60%
and 80% of --epochs). RandomResizedCrop(224) + flip to train, Resize 256 /
CenterCrop 224 to test. Reports top-1/top-5 of the best and the last epoch. A checkpoint is written
atomically after every epoch and a rerun with the same --output-dir resumes from it (same --weights,
--preset and --epochs only). After training,
the run fails if any backbone tensor differs from the checkpoint's (MoCo's sanity_check, here called).
"""

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from common import distributed
from common.cli import at_least, exit_on_user_error
from common.datasets import IMAGENET_SPLITS
from common.errors import ConfigError
from common.imagenet import check_imagenet_root, image_folders
from common.progress import progress_bar
from transfer import cli, results
from transfer.epoch_checkpoint import EpochCheckpoint
from transfer.frozen_resnet import build_model, check_backbone_unchanged

# name -> (base lr, schedule); "step" decays x0.1 at 60% and 80% of the epochs, MoCo's [60, 80] of 100.
PRESETS = {"clsa": (10.0, "cosine"), "moco": (30.0, "step")}
STEP_MILESTONES = (0.6, 0.8)


def get_parser():
    p = cli.parser(__doc__, "output/imagenet_linear")
    p.add_argument("--data", required=True, help="ImageNet root with train/ and val/ (ImageFolder layout)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="clsa",
        help="clsa: lr 10, cosine; moco: lr 30, x0.1 at epochs 60 and 80 of 100",
    )
    p.add_argument("--epochs", type=at_least(1), default=100)
    p.add_argument("--batch-size", type=at_least(1), default=256, help="total over all processes")
    p.add_argument("--workers", type=at_least(0), default=8, help="data-loading workers per process")
    p.add_argument("--seed", type=int, default=0)
    return distributed.add_arguments(p)


def preset_lr(preset, epoch, epochs):
    """The lr of 0-based `epoch`: MoCo's per-epoch cosine or its step decay, as the preset says."""
    lr, schedule = PRESETS[preset]
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    return lr * 0.1 ** sum(epoch >= round(fraction * epochs) for fraction in STEP_MILESTONES)


def describe_schedule(preset, epochs):
    lr, schedule = PRESETS[preset]
    if schedule == "cosine":
        return f"lr {lr} with per-epoch cosine decay over {epochs} epochs (CLSA)"
    milestones = " and ".join(str(round(fraction * epochs)) for fraction in STEP_MILESTONES)
    return f"lr {lr}, x0.1 at epochs {milestones} of {epochs} (MoCo main_lincls)"


@dataclass
class LinearEval:
    """What the epoch loop needs, built once by setup()."""

    process: distributed.Process
    model: nn.Module
    net: nn.Module  # the model, or its DDP wrapper
    reference: dict  # the backbone's tensors, for check_backbone_unchanged
    optimizer: torch.optim.Optimizer
    sampler: torch.utils.data.DistributedSampler | None
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    checkpoint: EpochCheckpoint
    weights: dict
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset


def setup(process, args):
    backbone, weights = results.load_weights(args.weights)
    train_set, val_set = image_folders(args.data)
    torch.manual_seed(args.seed)
    model, reference = build_model(backbone, len(train_set.classes))
    model.to(process.device).eval()  # eval for the whole run: BN statistics stay the pretrained ones
    net = model
    if process.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, [process.device] if process.device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=PRESETS[args.preset][0], momentum=0.9, weight_decay=0)
    loader_args = dict(
        batch_size=args.batch_size // process.world_size,
        num_workers=args.workers,
        pin_memory=process.device.type == "cuda",
    )
    sampler = torch.utils.data.DistributedSampler(train_set, seed=args.seed) if process.world_size > 1 else None
    train_loader = torch.utils.data.DataLoader(train_set, shuffle=sampler is None, sampler=sampler, **loader_args)
    val_loader = torch.utils.data.DataLoader(distributed.rank_slice(val_set), **loader_args)
    checkpoint = EpochCheckpoint(args.output_dir, weights["sha256"], preset=args.preset, epochs=args.epochs)
    return LinearEval(
        process, model, net, reference, optimizer, sampler, train_loader, val_loader, checkpoint, weights,
        train_set, val_set,
    )  # fmt: skip


def train_one_epoch(t, epoch, args):
    for group in t.optimizer.param_groups:
        group["lr"] = preset_lr(args.preset, epoch, args.epochs)
    if t.sampler is not None:
        t.sampler.set_epoch(epoch)
    loss_fn, device = nn.CrossEntropyLoss(), t.process.device
    bar = progress_bar(t.train_loader, t.process.rank == 0, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
    for images, targets in bar:
        loss = loss_fn(t.net(images.to(device, non_blocking=True)), targets.to(device, non_blocking=True))
        t.optimizer.zero_grad()
        loss.backward()
        t.optimizer.step()


@torch.no_grad()
def evaluate(t):
    """(top-1 %, top-5 %, images scored) over every process's slice of val."""
    correct1 = correct5 = seen = 0
    # The plain module: DDP's forward would broadcast buffers, a collective that uneven slices would hang.
    for images, targets in progress_bar(t.val_loader, t.process.rank == 0, desc="val", unit="batch", leave=False):
        logits = t.model(images.to(t.process.device, non_blocking=True))
        top5 = logits.topk(min(5, logits.shape[1]), 1).indices.cpu()
        hit = top5 == targets[:, None]
        correct1 += hit[:, 0].sum().item()
        correct5 += hit.any(1).sum().item()
        seen += len(targets)
    correct1, correct5, seen = distributed.all_reduce_sum([correct1, correct5, seen], t.process.device)
    return 100 * correct1 / seen, 100 * correct5 / seen, int(seen)


def report(t, history, args, start):
    best = max(history, key=lambda row: row["top1"])
    metrics = {
        "top1_best": best["top1"],
        "top5_at_best": best["top5"],
        "best_epoch": best["epoch"],
        "top1_last": history[-1]["top1"],
        "top5_last": history[-1]["top5"],
    }
    settings = f"--preset {args.preset}: {describe_schedule(args.preset, args.epochs)}, batch {args.batch_size}"
    split_sizes = {"train": len(t.train_set), "val": len(t.val_set), "classes": len(t.train_set.classes)}
    return results.write_results(
        args.output_dir,
        "imagenet_linear",
        metrics,
        results.protocol(__doc__, settings),
        t.weights,
        args.data,
        IMAGENET_SPLITS,
        split_sizes,
        start,
        t.process.world_size,
        feature_layer="res5 (global average pool, the fc input)",
        history=history,
    )


def run(process, args):
    start = time.perf_counter()
    t = setup(process, args)
    saved = t.checkpoint.resume(fc=t.model.fc, optimizer=t.optimizer)
    history, first_epoch = (saved["history"], saved["epoch"]) if saved else ([], 0)
    for epoch in range(first_epoch, args.epochs):
        train_one_epoch(t, epoch, args)
        top1, top5, scored = evaluate(t)
        lr = t.optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch + 1, "top1": top1, "top5": top5, "val_images": scored, "lr": lr})
        if process.rank == 0:
            print(f"epoch {epoch + 1}: top-1 {top1:.2f}  top-5 {top5:.2f}")
        t.checkpoint.save({"fc": t.model.fc, "optimizer": t.optimizer}, epoch=epoch + 1, history=history)
    check_backbone_unchanged(t.model, t.reference)
    if process.rank == 0:
        report(t, history, args, start)


def main(args):
    plan = distributed.detect(args.num_gpus)
    world = plan.world_size
    if args.batch_size % world:
        raise ConfigError(
            f"--batch-size {args.batch_size} is the total over {world} processes and must "
            f"divide evenly, e.g. --batch-size {args.batch_size // world * world or world}"
        )
    results.check_inputs(args.weights, check_imagenet_root, args.data)
    with results.output_folder(args.output_dir, "imagenet_linear", args.weights, plan.first_rank):
        distributed.launch(run, args, plan=plan)


def cli_main():
    """`python transfer/imagenet_linear.py`, and the `clsa-imagenet-linear` command of an installed package."""
    exit_on_user_error(main, get_parser().parse_args())


if __name__ == "__main__":
    cli_main()
