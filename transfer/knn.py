"""Weighted k-nearest-neighbour evaluation of a frozen backbone (Wu et al. 2018, as DINO evaluates it).

    python transfer/knn.py --weights CKPT --data ROOT
    torchrun --nproc_per_node 8 transfer/knn.py --weights CKPT --data ROOT

ROOT holds train/ and val/ in ImageFolder layout. The backbone stays in eval mode with no gradient;
its res5 map is global-average-pooled and L2-normalised, on Resize 256 + CenterCrop 224 views of
both splits. Each val image's k most cosine-similar train images vote for their class with weight
exp(similarity / T), T = 0.07; top-1 and top-5 are reported for k in 10, 20, 100 and 200 (DINO's
eval_knn.py). Top-5 counts only classes that received a vote: DINO's sort ranks classes without
votes arbitrarily, which matters only when k < 5. Every process extracts its slice of both splits;
the train features are gathered on every process, and each scores its own val slice against them a
chunk of queries at a time, so that ImageNet's 1.28 M x 2048 bank fits one GPU.
"""

import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from common.cli import at_least, exit_on_user_error, positive
from transfer import cli
from transfer.features import build_trunk
from transfer.imagenet_linear import center_crop_transform, image_folders, init_distributed, run_record

KS = (10, 20, 100, 200)
TEMPERATURE = 0.07
# Query rows per chunk times bank rows stays under this many similarities: 1 GiB in float32.
SIMILARITY_BUDGET = 1 << 28


def _world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


@torch.no_grad()
def local_features(trunk, dataset, device, batch_size=256, num_workers=0, desc="features"):
    """(L2-normalised features, labels) of this process's slice of `dataset`: images rank, rank + world, ..."""
    rank, world = _world()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, range(rank, len(dataset), world)),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        # A loader draws its workers' base seed from its generator; a private one leaves the global
        # random stream (a training run's) untouched.
        generator=torch.Generator(),
    )
    features, labels = [], []
    for images, targets in tqdm(loader, desc=desc, unit="batch", disable=rank != 0, leave=False):
        features.append(F.normalize(trunk(images.to(device, non_blocking=True)).float(), dim=1))
        labels.append(targets.to(device))
    return torch.cat(features), torch.cat(labels)


def gather_slices(local, total):
    """The rows of every process's slice (rank, rank + world, ...) back in dataset order, on every process."""
    rank, world = _world()
    if world == 1:
        return local
    rows = math.ceil(total / world)
    padded = local.new_zeros((rows, *local.shape[1:]))
    padded[: len(local)] = local
    gathered = local.new_empty((world * rows, *local.shape[1:]))
    dist.all_gather_into_tensor(gathered, padded)
    # Row i of process r is item r + i * world: interleave, then drop the padding at the end.
    return gathered.unflatten(0, (world, rows)).transpose(0, 1).flatten(0, 1)[:total]


@torch.no_grad()
def weighted_knn_hits(
    bank, bank_labels, queries, query_labels, num_classes, ks=KS, temperature=TEMPERATURE, chunk=None
):
    """{k: (top-1 hits, top-5 hits)} of the weighted vote, as counts that processes can sum.

    `bank` and `queries` are L2-normalised rows; each query's k nearest bank rows by cosine similarity
    vote for their label with weight exp(similarity / temperature); top-5 counts only classes that got
    a vote. Queries are scored `chunk` at a
    time (default: as many as keep chunk x bank similarities within SIMILARITY_BUDGET).
    """
    ks = sorted(k for k in ks if k <= len(bank))
    if not ks:
        return {}
    chunk = chunk or max(1, SIMILARITY_BUDGET // len(bank))
    hits = torch.zeros(len(ks), 2, dtype=torch.long, device=queries.device)
    for start in range(0, len(queries), chunk):
        similarity, neighbours = (queries[start : start + chunk] @ bank.T).topk(ks[-1], dim=1)  # sorted
        neighbour_labels, weights = bank_labels[neighbours], (similarity / temperature).exp()
        target = query_labels[start : start + chunk, None]
        for row, k in enumerate(ks):
            votes = weights.new_zeros(len(target), num_classes).scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])
            top_votes, top_classes = votes.topk(min(5, num_classes), dim=1)
            # A class no neighbour voted for is no prediction (DINO's sort would rank such ties arbitrarily).
            correct = (top_classes == target) & (top_votes > 0)
            hits[row, 0] += correct[:, 0].sum()
            hits[row, 1] += correct.any(dim=1).sum()
    return {k: (int(top1), int(top5)) for k, (top1, top5) in zip(ks, hits.tolist())}


def knn_accuracy(
    trunk, train_set, val_set, num_classes, device, ks=KS, temperature=TEMPERATURE, batch_size=256, num_workers=0
):
    """{"top1_k20": %, "top5_k20": %, ...} of `trunk` (eval mode, pooled features), the same on every
    process; ks larger than the train set are left out. Every process of the group must call it."""
    bank, bank_labels = (
        gather_slices(t, len(train_set))
        for t in local_features(trunk, train_set, device, batch_size, num_workers, desc="kNN train")
    )
    queries, query_labels = local_features(trunk, val_set, device, batch_size, num_workers, desc="kNN val")
    hits = weighted_knn_hits(bank, bank_labels, queries, query_labels, num_classes, ks, temperature)
    counts = torch.tensor(
        [len(queries)] + [n for k in sorted(hits) for n in hits[k]], dtype=torch.float64, device=device
    )
    if dist.is_initialized():
        dist.all_reduce(counts)
    scored, counts = counts[0].item(), counts[1:].tolist()
    metrics = {}
    for i, k in enumerate(sorted(hits)):
        metrics[f"top1_k{k}"] = 100 * counts[2 * i] / scored
        metrics[f"top5_k{k}"] = 100 * counts[2 * i + 1] / scored
    return metrics


def get_parser():
    p = cli.parser(__doc__, "output/knn")
    p.add_argument("--data", required=True, help="ImageNet root with train/ and val/ (ImageFolder layout)")
    p.add_argument("--ks", type=at_least(1), nargs="+", default=list(KS), help="neighbour counts to report")
    p.add_argument("--temperature", type=positive(), default=TEMPERATURE, help="T of the vote weight exp(sim / T)")
    p.add_argument(
        "--crop-size",
        type=at_least(1),
        default=224,
        help="CenterCrop size after a resize to crop * 256 / 224 (224: the protocol)",
    )
    p.add_argument("--batch-size", type=at_least(1), default=256, help="images per forward pass and process")
    p.add_argument("--workers", type=at_least(0), default=8, help="data-loading workers per process")
    return p


def main(args):
    start = time.perf_counter()
    rank, world, device = init_distributed()
    backbone, weights = cli.load_weights(args.weights)
    transform = center_crop_transform(args.crop_size)
    train_set, val_set = image_folders(args.data, train_transform=transform, val_transform=transform)
    trunk = build_trunk(backbone, "res5").to(device)
    metrics = knn_accuracy(
        trunk,
        train_set,
        val_set,
        len(train_set.classes),
        device,
        args.ks,
        args.temperature,
        args.batch_size,
        args.workers,
    )
    if rank == 0:
        ks = sorted(int(name.removeprefix("top1_k")) for name in metrics if name.startswith("top1_k"))
        for k in ks:
            print(f"k={k}: top-1 {metrics[f'top1_k{k}']:.2f}  top-5 {metrics[f'top5_k{k}']:.2f}")
        resize = round(args.crop_size * 256 / 224)
        cli.write_results(
            args.output_dir,
            {
                "task": "knn",
                "metrics": metrics,
                "protocol": cli.protocol(
                    __doc__,
                    f"Resize {resize} CenterCrop {args.crop_size}, T {args.temperature}, k in {ks}"
                    + (
                        f" (left out, larger than the train set: {sorted(set(args.ks) - set(ks))})"
                        if set(args.ks) - set(ks)
                        else ""
                    ),
                ),
                **run_record(args.data, weights, train_set, val_set, world, start),
            },
        )
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    exit_on_user_error(main, get_parser().parse_args())
