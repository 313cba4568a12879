"""ImageNet linear evaluation (MoCo / CLSA protocol) of a frozen backbone.

    python transfer/imagenet_linear.py --weights CKPT --data ROOT [--preset clsa|moco]
    torchrun --nproc_per_node 8 transfer/imagenet_linear.py --weights CKPT --data ROOT

ROOT holds train/ and val/ in ImageFolder layout. The backbone stays in eval mode (BN statistics
frozen) with no gradient; only fc learns: N(0, 0.01) init, bias 0, SGD momentum 0.9, weight decay 0,
lr 10 (clsa, the CLSA paper) or 30 (moco, MoCo's main_lincls) with per-epoch cosine decay over 100
epochs, batch 256 in all (split over processes). RandomResizedCrop(224) + flip to train, Resize 256 /
CenterCrop 224 to test. Reports top-1/top-5 of the best and the last epoch. A checkpoint is written
atomically after every epoch and a rerun with the same --output-dir resumes from it. After training,
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

from common.io import atomic_torch_save
from transfer import cli
from transfer.features import IMAGENET_MEAN, IMAGENET_STD, build_resnet
from transfer.voc import DatasetError

PRESET_LR = {"clsa": 10.0, "moco": 30.0}


class BackboneChanged(RuntimeError):
    pass


def get_parser():
    p = cli.parser(__doc__.split("\n")[0], "output/imagenet_linear")
    p.add_argument("--data", required=True, help="ImageNet root with train/ and val/ (ImageFolder layout)")
    p.add_argument("--preset", choices=sorted(PRESET_LR), default="clsa", help="lr 10 (clsa) or 30 (moco)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256, help="total over all processes")
    p.add_argument("--workers", type=int, default=8, help="data-loading workers per process")
    p.add_argument("--seed", type=int, default=0)
    return p


def check_backbone_unchanged(model, reference):
    """Raises BackboneChanged naming the first tensor of `model` (fc aside) that differs from `reference`."""
    for name, value in model.state_dict().items():
        if not name.startswith("fc.") and not torch.equal(value.cpu(), reference[name]):
            raise BackboneChanged(f"backbone tensor {name} changed during linear evaluation; it must stay frozen")


def build_model(weights, num_classes):
    """(ResNet with frozen backbone and a fresh fc, copy of the backbone tensors for the sanity check)."""
    model, backbone = build_resnet(weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.normal_(model.fc.weight, 0, 0.01)
    nn.init.zeros_(model.fc.bias)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("fc.")
    reference = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    return model, reference


def image_folders(root):
    normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(),
                           *normalize])
    val_tf = v2.Compose([v2.ToImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224), *normalize])
    folders = {}
    for split, tf in (("train", train_tf), ("val", val_tf)):
        path = os.path.join(root, split)
        if not os.path.isdir(path):
            raise DatasetError(f"{path} not found: --data must hold train/<class>/*.JPEG and val/<class>/*.JPEG")
        folders[split] = torchvision.datasets.ImageFolder(path, tf)
    if folders["train"].classes != folders["val"].classes:
        raise DatasetError(f"{root}: train/ and val/ hold different class folders")
    return folders["train"], folders["val"]


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
    return 100 * correct1 / seen, 100 * correct5 / seen


def main(args):
    start = time.perf_counter()
    rank, world, device = init_distributed()
    show = rank == 0
    weights = cli.describe_weights(args.weights)
    train_set, val_set = image_folders(args.data)
    torch.manual_seed(args.seed)
    model, reference = build_model(args.weights, len(train_set.classes))
    model.to(device).eval()  # eval for the whole run: BN statistics stay the pretrained ones
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, [device] if device.type == "cuda" else None)
    lr = PRESET_LR[args.preset]
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=lr, momentum=0.9, weight_decay=0)
    loader_args = dict(batch_size=args.batch_size // world, num_workers=args.workers,
                       pin_memory=device.type == "cuda")
    train_sampler = torch.utils.data.DistributedSampler(train_set, seed=args.seed) if world > 1 else None
    train_loader = torch.utils.data.DataLoader(train_set, shuffle=train_sampler is None, sampler=train_sampler,
                                               **loader_args)
    # Each process scores a disjoint slice of val (no padding duplicates, unlike DistributedSampler).
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, range(rank, len(val_set), world)),
                                             **loader_args)

    checkpoint_path = args.output_dir / "checkpoint.pth"
    history, first_epoch = [], 0
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state["weights_sha256"] != weights["sha256"]:
            raise cli.CheckpointError(checkpoint_path, "was written for other --weights; use another --output-dir")
        model.fc.load_state_dict(state["fc"])
        optimizer.load_state_dict(state["optimizer"])
        history, first_epoch = state["history"], state["epoch"]
        if show:
            print(f"resumed from {checkpoint_path} at epoch {first_epoch}")

    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(first_epoch, args.epochs):
        for group in optimizer.param_groups:  # MoCo's per-epoch cosine: lr * 0.5 * (1 + cos(pi * epoch / epochs))
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        for images, targets in tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                                    disable=not show):
            loss = loss_fn(net(images.to(device, non_blocking=True)), targets.to(device, non_blocking=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # The plain module: DDP's forward would broadcast buffers, a collective that uneven slices would hang.
        top1, top5 = evaluate(model, val_loader, device, show)
        history.append({"epoch": epoch + 1, "top1": top1, "top5": top5, "lr": optimizer.param_groups[0]["lr"]})
        if show:
            print(f"epoch {epoch + 1}: top-1 {top1:.2f}  top-5 {top5:.2f}")
            atomic_torch_save({"fc": model.fc.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                               "history": history, "weights_sha256": weights["sha256"]}, checkpoint_path)
    check_backbone_unchanged(model, reference)

    if show:
        best = max(history, key=lambda row: row["top1"])
        results = {
            "task": "imagenet_linear",
            "metrics": {"top1_best": best["top1"], "top5_at_best": best["top5"], "best_epoch": best["epoch"],
                        "top1_last": history[-1]["top1"], "top5_last": history[-1]["top5"]},
            "history": history,
            "protocol": (f"MoCo/CLSA linear evaluation ({args.preset} preset): frozen backbone in eval mode, fc "
                         f"N(0, 0.01) bias 0, SGD lr {lr} momentum 0.9 wd 0, per-epoch cosine over {args.epochs} "
                         f"epochs, batch {args.batch_size}, RandomResizedCrop(224)+flip / Resize 256 CenterCrop 224; "
                         "backbone verified unchanged after training"),
            "feature_layer": "res5 (global average pool, the fc input)",
            "weights": weights,
            "data_root": str(args.data),
            "split_sizes": {"train": len(train_set), "val": len(val_set), "classes": len(train_set.classes)},
            "processes": world,
            "wall_time_s": {"total": time.perf_counter() - start},
        }
        cli.write_results(args.output_dir, results)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    cli.run(lambda: main(get_parser().parse_args()))
