"""The CLSA reference code's VOC07 classification protocol, which produced Table 3's "VOC07 accuracy" 93.6.

Train on VOC07 train, choose the epoch whose weights give the best per-image AP on VOC07 val, test
those weights on VOC07 test. The model is the pretrained ResNet with a new fc (N(0, 0.01), bias 0);
only fc learns, but the whole model is in train mode while training, so the backbone's BatchNorm
normalises with batch statistics and its running statistics adapt to VOC (the weights stay frozen).
SGD on fc (lr 0.05), momentum 0.9, no weight decay, batch 16, 100 epochs; CosineAnnealingLR(T_max
12, eta_min 0) stepped once before each epoch, so the rate cycles with period 2 T_max; BCE-with-logits
summed over labels and batch. Labels: a class is positive only with a non-difficult object of it (a
difficult-only class is negative).

Images, normalised with VOC's mean and std: training Resize(300x300), then one of ColorJitter
(brightness 0.8-1.2) or RandomGrayscale(0.25), a flip with p 0.25 and RandomRotation(25); val
Resize(330) and CenterCrop(300); test Resize(330) and FiveCrop(300), the logits averaged over the
crops before the sigmoid. voc07_per_image_AP is sklearn's AP of each test image's 20 sigmoid scores,
summed over all test images and divided by their number (an image without a positive scores 0), as
the reference code computes its "VOC07 accuracy"; voc07_mAP is VOC's all-point AP per class with
difficult objects left out.

With several processes (common/distributed.py's launcher: --num-gpus, torchrun, srun or submitit)
the batch is split over the GPUs and the BatchNorm layers are SyncBatchNorm, so each step normalises
over the whole batch, as one process does.
"""

import re
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from common import distributed
from common.datasets import VOC2007_SPLITS
from common.errors import ConfigError
from common.progress import progress_bar
from transfer import results
from transfer.epoch_checkpoint import EpochCheckpoint
from transfer.frozen_resnet import build_model, check_backbone_unchanged
from transfer.metrics import per_class_voc_ap, per_image_ap
from transfer.voc import VOC_CLASSES, read_split, voc2007_root

NAME = "clsa"
# Per-channel RGB mean and std of VOC2007 that the reference code normalises with.
VOC_MEAN = (0.4573, 0.4388, 0.4073)
VOC_STD = (0.2675, 0.2638, 0.2777)


def build_transforms(crop_size=300, resize=330):
    """train / val / test transforms of the reference: train Resize(crop x crop) with colour or grey
    jitter, flip and rotation; val Resize(resize) CenterCrop(crop); test Resize(resize) FiveCrop(crop)
    (a 5 x 3 x crop x crop tensor). Geometry runs on the PIL image, as in the reference."""
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(VOC_MEAN, VOC_STD)]
    train = v2.Compose(
        [
            v2.Resize((crop_size, crop_size)),
            v2.RandomChoice([v2.ColorJitter(brightness=(0.8, 1.2)), v2.RandomGrayscale(p=0.25)]),
            v2.RandomHorizontalFlip(p=0.25),
            v2.RandomRotation(25),
            *to_tensor,
        ]
    )
    val = v2.Compose([v2.Resize(resize), v2.CenterCrop(crop_size), *to_tensor])
    test = v2.Compose([v2.Resize(resize), v2.FiveCrop(crop_size), *to_tensor, torch.stack])
    return {"train": train, "val": val, "test": test}


class VocImages(torch.utils.data.Dataset):
    """(image tensor, 20 binary targets) of a VOC2007 split; targets are 1 for label 1 only."""

    def __init__(self, paths, labels, transform):
        self.paths, self.targets, self.transform = list(paths), torch.from_numpy(labels == 1).float(), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), self.targets[index]


def adapted_state(model):
    """What this protocol changes in the model: fc and every buffer (the BatchNorm running statistics)."""
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    return {name: value.detach().clone().cpu() for name, value in model.state_dict().items() if name not in frozen}


def load_adapted_state(model, state):
    model.load_state_dict({**model.state_dict(), **state})


class AdaptedState:
    """The adapted state of a model, as the checkpoint saves and resumes it."""

    def __init__(self, model):
        self.model = model

    def state_dict(self):
        return adapted_state(self.model)

    def load_state_dict(self, state):
        load_adapted_state(self.model, state)


def epoch_seed(seed, epoch, rank):
    """One seed per (run seed, epoch, process): shuffling and augmentation of an epoch do not depend on
    whether the run resumed before it."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def train_one_epoch(net, loader, optimizer, device, world, show, desc):
    """One pass over `loader` with `net` in train mode; returns the loss summed over all images."""
    net.train()
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    total = 0.0
    for images, targets in progress_bar(loader, show, desc=desc, unit="batch", leave=False):
        loss = loss_fn(net(images.to(device, non_blocking=True)), targets.to(device, non_blocking=True))
        optimizer.zero_grad()
        # DDP averages gradients over processes; x world makes them those of the loss summed over the whole batch.
        (loss * world).backward()
        optimizer.step()
        total += loss.item()
    return distributed.all_reduce_sum([total], device)[0]


@torch.no_grad()
def predict(model, dataset, device, batch_size, workers, show=True, desc="eval"):
    """Logits (images x classes) of `dataset` in eval mode, on every process; an item of 4 dimensions is
    several crops of one image, whose logits are averaged. Each process scores its rank slice."""
    model.eval()
    loader = torch.utils.data.DataLoader(
        distributed.rank_slice(dataset), batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    chunks = []
    for images, _ in progress_bar(loader, show, desc=desc, unit="batch", leave=False):
        crops = images.shape[1] if images.dim() == 5 else 1
        logits = model(images.flatten(0, images.dim() - 4).to(device, non_blocking=True))
        chunks.append(logits.view(len(images), crops, -1).mean(1).float())
    return distributed.gather_slices(torch.cat(chunks), len(dataset)).cpu()


def sigmoid_scores(logits):
    """The reference's scores: sigmoid of the float32 logits (its ties where the sigmoid saturates included)."""
    return torch.sigmoid(logits.float()).numpy()


def check_flags(args, world_size):
    """ConfigError for flags this protocol cannot run with on `world_size` processes, before any work."""
    if args.resize < args.crop_size:
        raise ConfigError(
            f"--resize {args.resize} is smaller than --crop-size {args.crop_size}: the val and test "
            "crops would be padded; resize to at least the crop (the reference: 330 for 300)"
        )
    if args.batch_size % world_size:
        raise ConfigError(
            f"--batch-size {args.batch_size} is the total over {world_size} processes and must "
            "divide evenly; use a number of processes that divides it"
        )
    if world_size > 1 and not torch.cuda.is_available():
        raise ConfigError(
            "several processes need GPUs: the protocol's BatchNorm statistics are synchronised "
            "with SyncBatchNorm, which runs on GPUs only; run one process on the CPU"
        )


@dataclass
class VocTraining:
    """What the epoch loop needs, built once by setup()."""

    process: distributed.Process
    model: nn.Module
    net: nn.Module  # the model, or its DDP wrapper with SyncBatchNorm
    frozen_weights: dict  # the backbone's weights, for check_backbone_unchanged
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: torch.utils.data.DistributedSampler | None
    train_loader: torch.utils.data.DataLoader
    datasets: dict
    splits: dict
    root: object
    weights: dict
    checkpoint: EpochCheckpoint

    @property
    def show(self):
        return self.process.rank == 0

    def predict(self, split, args, desc):
        return predict(
            self.model, self.datasets[split], self.process.device, args.batch_size // self.process.world_size,
            args.workers, self.show, desc,
        )  # fmt: skip


def setup(process, args):
    backbone, weights = results.load_weights(args.weights)
    root = voc2007_root(args.data_root)
    transforms = build_transforms(args.crop_size, args.resize)
    splits = {name: read_split(root, name) for name in ("train", "val", "test")}
    datasets = {name: VocImages(*splits[name], transforms[name]) for name in splits}
    torch.manual_seed(args.seed)
    model, reference = build_model(backbone, len(VOC_CLASSES))
    frozen_weights = {name: reference[name] for name, p in model.named_parameters() if not p.requires_grad}
    net = model.to(process.device)
    if process.world_size > 1:
        net = nn.parallel.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model), [process.device])
        model = net.module
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=args.lr, momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.t_max, eta_min=0)
    # DistributedSampler pads the split to a multiple of the processes with a few repeated images.
    world = process.world_size
    sampler = torch.utils.data.DistributedSampler(datasets["train"], seed=args.seed) if world > 1 else None
    train_loader = torch.utils.data.DataLoader(
        datasets["train"],
        batch_size=args.batch_size // world,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.workers,
        pin_memory=process.device.type == "cuda",
    )
    flags = ("epochs", "lr", "batch_size", "t_max", "crop_size", "resize", "seed")
    checkpoint = EpochCheckpoint(
        args.output_dir, weights["sha256"], protocol=NAME, **{flag: getattr(args, flag) for flag in flags}
    )
    return VocTraining(
        process, model, net, frozen_weights, optimizer, scheduler, sampler, train_loader, datasets, splits, root,
        weights, checkpoint,
    )  # fmt: skip


def train_and_validate(t, epoch, args):
    """One epoch of training, then val's per-image AP: the row of the run's history."""
    with warnings.catch_warnings():  # stepping before optimizer.step() is the reference's schedule
        warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
        t.scheduler.step()  # epoch e (from 0) trains at the cosine's step e + 1
    torch.manual_seed(epoch_seed(args.seed, epoch, t.process.rank))
    if t.sampler is not None:
        t.sampler.set_epoch(epoch)
    desc = f"epoch {epoch + 1}/{args.epochs}"
    loss = train_one_epoch(t.net, t.train_loader, t.optimizer, t.process.device, t.process.world_size, t.show, desc)
    val_ap = 100 * per_image_ap(sigmoid_scores(t.predict("val", args, "val")), t.splits["val"][1])
    lr = t.optimizer.param_groups[0]["lr"]
    return {"epoch": epoch + 1, "lr": lr, "train_loss_sum": loss, "val_per_image_AP": val_ap}


def report(t, test_logits, best, history, args, start, train_seconds):
    test_labels = t.splits["test"][1]
    image_ap = 100 * per_image_ap(sigmoid_scores(test_logits), test_labels)
    class_ap = 100 * per_class_voc_ap(test_logits.numpy(), test_labels)
    print(f"VOC07, CLSA reference protocol (best epoch {best['epoch']} of {args.epochs} on val):")
    print(f"  voc07_per_image_AP (CLSA Table 3 'VOC07 accuracy', {len(test_labels)} images): {image_ap:.2f}")
    print(f"  voc07_mAP (per-class, the same classifier):                            {class_ap.mean():.2f}")
    metrics = {
        "voc07_per_image_AP": image_ap,
        "voc07_mAP": float(class_ap.mean()),
        "best_epoch": best["epoch"],
        "val_per_image_AP_at_best": best["val_per_image_AP"],
    }
    settings = (
        f"--lr {args.lr}, --batch-size {args.batch_size}, --epochs {args.epochs}, --t-max {args.t_max}, "
        f"--crop-size {args.crop_size}, --resize {args.resize}"
    )
    return results.write_results(
        args.output_dir,
        "voc07_linear",
        metrics,
        results.protocol(__doc__, settings),
        t.weights,
        t.root,
        VOC2007_SPLITS,
        {name: len(labels) for name, (_, labels) in t.splits.items()},
        start,
        t.process.world_size,
        {"train_and_val": train_seconds},
        protocol_name=NAME,
        comparable_with={
            "voc07_per_image_AP": "CLSA paper Table 3 'VOC07 Accuracy' of CLSA (93.6): the same protocol and metric",
            "voc07_mAP": "per-class VOC07 mAP, but of this protocol's classifier (train split only, adapted BN)",
        },
        per_class_AP=dict(zip(VOC_CLASSES, map(float, class_ap))),
        history=history,
        seed=args.seed,
    )


def run(process, args):
    start = time.perf_counter()
    t = setup(process, args)
    stateful = {"model": AdaptedState(t.model), "optimizer": t.optimizer, "scheduler": t.scheduler}
    saved = t.checkpoint.resume(**stateful)
    history, best, first_epoch = (saved["history"], saved["best"], saved["epoch"]) if saved else ([], None, 0)
    train_start = time.perf_counter()
    for epoch in range(first_epoch, args.epochs):
        history.append(train_and_validate(t, epoch, args))
        val_ap = history[-1]["val_per_image_AP"]
        if best is None or val_ap > best["val_per_image_AP"]:  # ties keep the earlier epoch
            best = {"epoch": epoch + 1, "val_per_image_AP": val_ap, "model": adapted_state(t.model)}
        if t.show:
            print(
                f"epoch {epoch + 1}: lr {history[-1]['lr']:.5f}  val per-image AP {val_ap:.2f}  "
                f"(best {best['val_per_image_AP']:.2f} at epoch {best['epoch']})"
            )
        t.checkpoint.save(stateful, epoch=epoch + 1, history=history, best=best)
    check_backbone_unchanged(t.model, t.frozen_weights)
    train_seconds = time.perf_counter() - train_start
    load_adapted_state(t.model, best["model"])
    test_logits = t.predict("test", args, "test (5 crops)")
    return report(t, test_logits, best, history, args, start, train_seconds) if t.show else None


def main(args):
    """The protocol on the processes of this launch; results.json's record on the first of them."""
    plan = distributed.detect(args.num_gpus)
    check_flags(args, plan.world_size)
    results.check_inputs(args.weights, voc2007_root, args.data_root)
    with results.output_folder(args.output_dir, "voc07_linear", args.weights, plan.first_rank):
        return distributed.launch(run, args, plan=plan)
