"""ImageNet linear evaluation (MoCo / CLSA protocol) of a frozen backbone.

    python transfer/imagenet_linear.py --weights CKPT --data ROOT [--preset clsa|moco]
    torchrun --nproc_per_node 8 transfer/imagenet_linear.py --weights CKPT --data ROOT

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
import os
import time

import torch
import torch.distributed as dist
import torchvision
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from common.cli import at_least, exit_on_user_error
from common.constants import IMAGENET_MEAN, IMAGENET_STD
from common.datasets import IMAGENET_SPLITS, check_image_root
from common.errors import ConfigError, DatasetError
from common.io import atomic_torch_save, fingerprint_files
from transfer import cli
from transfer.features import build_resnet

# name -> (base lr, schedule); "step" decays x0.1 at 60% and 80% of the epochs, MoCo's [60, 80] of 100.
PRESETS = {"clsa": (10.0, "cosine"), "moco": (30.0, "step")}
STEP_MILESTONES = (0.6, 0.8)


class BackboneChanged(RuntimeError):
    pass


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
    return p


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


def check_backbone_unchanged(model, reference):
    """Raises BackboneChanged naming the first tensor of `reference` that differs in `model`."""
    current = model.state_dict()
    for name, value in reference.items():
        if not torch.equal(current[name].cpu(), value):
            raise BackboneChanged(f"backbone tensor {name} changed during linear evaluation; it must stay frozen")


def build_model(backbone, num_classes):
    """(ResNet with frozen backbone and a fresh fc, copy of the backbone tensors for the sanity check)."""
    model = build_resnet(backbone)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.normal_(model.fc.weight, 0, 0.01)
    nn.init.zeros_(model.fc.bias)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("fc.")
    reference = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    return model, reference


_NORMALIZE = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def center_crop_transform(crop=224):
    """The test-time view of ImageNet evaluations: Resize(256) + CenterCrop(224), or the same ratio at `crop`."""
    return v2.Compose(
        [v2.ToImage(), v2.Resize(round(crop * 256 / 224), antialias=True), v2.CenterCrop(crop), *_NORMALIZE]
    )


def image_folders(root, train_transform=None, val_transform=None):
    """(train, val) ImageFolders of root/train and root/val; by default RandomResizedCrop(224) + flip to
    train and center_crop_transform() to test."""
    train_tf = train_transform or v2.Compose(
        [v2.ToImage(), v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), *_NORMALIZE]
    )
    folders = {}
    for split, tf in (("train", train_tf), ("val", val_transform or center_crop_transform())):
        path = os.path.join(root, split)
        if not os.path.isdir(path):
            raise DatasetError(f"{path} not found: --data must hold train/<class>/*.JPEG and val/<class>/*.JPEG")
        check_image_root(path, "--data")  # an empty or flat folder: one line naming it, not ImageFolder's traceback
        folders[split] = torchvision.datasets.ImageFolder(path, tf)
    if folders["train"].classes != folders["val"].classes:
        raise DatasetError(f"{root}: train/ and val/ hold different class folders")
    return folders["train"], folders["val"]


def run_record(data_root, weights, train_set, val_set, world, start):
    """What results.json of every ImageNet protocol records besides its metrics: the features, weights
    and data it used (with the data's fingerprint), on how many processes, and how long it took."""
    return {
        "feature_layer": "res5 (global average pool, the fc input)",
        "weights": weights,
        "data_root": str(data_root),
        "data": fingerprint_files(data_root, IMAGENET_SPLITS),
        "split_sizes": {"train": len(train_set), "val": len(val_set), "classes": len(train_set.classes)},
        "processes": world,
        "wall_time_s": {"total": time.perf_counter() - start},
    }


def init_distributed():
    """(rank, world size, device); a plain `python` run is one process without a process group."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", 0)), world, device


def all_reduce_sum(values, device):
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def evaluate(model, loader, device, show):
    correct1 = correct5 = seen = 0
    for images, targets in tqdm(loader, desc="val", unit="batch", disable=not show, leave=False):
        logits = model(images.to(device, non_blocking=True))
        top5 = logits.topk(min(5, logits.shape[1]), 1).indices.cpu()
        hit = top5 == targets[:, None]
        correct1 += hit[:, 0].sum().item()
        correct5 += hit.any(1).sum().item()
        seen += len(targets)
    correct1, correct5, seen = all_reduce_sum([correct1, correct5, seen], device)
    return 100 * correct1 / seen, 100 * correct5 / seen, int(seen)


def main(args):
    start = time.perf_counter()
    rank, world, device = init_distributed()
    if args.batch_size % world:
        raise ConfigError(
            f"--batch-size {args.batch_size} is the total over {world} processes and must "
            f"divide evenly, e.g. --batch-size {args.batch_size // world * world or world}"
        )
    show = rank == 0
    backbone, weights = cli.load_weights(args.weights)
    train_set, val_set = image_folders(args.data)
    torch.manual_seed(args.seed)
    model, reference = build_model(backbone, len(train_set.classes))
    model.to(device).eval()  # eval for the whole run: BN statistics stay the pretrained ones
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, [device] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=PRESETS[args.preset][0], momentum=0.9, weight_decay=0)
    loader_args = dict(batch_size=args.batch_size // world, num_workers=args.workers, pin_memory=device.type == "cuda")
    train_sampler = torch.utils.data.DistributedSampler(train_set, seed=args.seed) if world > 1 else None
    train_loader = torch.utils.data.DataLoader(
        train_set, shuffle=train_sampler is None, sampler=train_sampler, **loader_args
    )
    # Each process scores a disjoint slice of val (no padding duplicates, unlike DistributedSampler).
    val_loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(val_set, range(rank, len(val_set), world)), **loader_args
    )

    checkpoint_path = args.output_dir / "checkpoint.pth"
    history, first_epoch = [], 0
    if checkpoint_path.is_file():
        state = cli.load_resume_state(checkpoint_path, weights["sha256"], preset=args.preset, epochs=args.epochs)
        model.fc.load_state_dict(state["fc"])
        optimizer.load_state_dict(state["optimizer"])
        history, first_epoch = state["history"], state["epoch"]
        if show:
            print(f"resumed from {checkpoint_path} at epoch {first_epoch}")

    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(first_epoch, args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = preset_lr(args.preset, epoch, args.epochs)
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        for images, targets in tqdm(
            train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", disable=not show
        ):
            loss = loss_fn(net(images.to(device, non_blocking=True)), targets.to(device, non_blocking=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # The plain module: DDP's forward would broadcast buffers, a collective that uneven slices would hang.
        top1, top5, scored = evaluate(model, val_loader, device, show)
        history.append(
            {
                "epoch": epoch + 1,
                "top1": top1,
                "top5": top5,
                "val_images": scored,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        if show:
            print(f"epoch {epoch + 1}: top-1 {top1:.2f}  top-5 {top5:.2f}")
            atomic_torch_save(
                {
                    "fc": model.fc.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "weights_sha256": weights["sha256"],
                    "preset": args.preset,
                    "epochs": args.epochs,
                },
                checkpoint_path,
            )
    check_backbone_unchanged(model, reference)

    if show:
        best = max(history, key=lambda row: row["top1"])
        results = {
            "task": "imagenet_linear",
            "metrics": {
                "top1_best": best["top1"],
                "top5_at_best": best["top5"],
                "best_epoch": best["epoch"],
                "top1_last": history[-1]["top1"],
                "top5_last": history[-1]["top5"],
            },
            "history": history,
            "protocol": cli.protocol(
                __doc__,
                f"--preset {args.preset}: {describe_schedule(args.preset, args.epochs)}, batch {args.batch_size}",
            ),
            **run_record(args.data, weights, train_set, val_set, world, start),
        }
        cli.write_results(args.output_dir, results)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    exit_on_user_error(main, get_parser().parse_args())
