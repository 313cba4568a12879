"""Weighted k-nearest-neighbour accuracy of frozen features (Wu et al. 2018, as DINO's eval_knn.py).

Each query's k most cosine-similar bank rows vote for their class with weight exp(similarity / T),
T = 0.07. Top-5 counts only classes that received a vote: DINO's sort ranks classes without votes
arbitrarily, which matters only when k < 5. Every process extracts its rank slice of both splits;
the bank is gathered on every process, and each scores its own queries against it a chunk at a
time, so that ImageNet's 1.28 M x 2048 bank fits one GPU. transfer/knn.py reports it on ImageNet;
pretraining's kNN monitor on a subset.
"""

import torch
import torch.nn.functional as F

from common.distributed import all_reduce_sum, gather_slices, rank_and_world, rank_slice
from common.progress import progress_bar

KS = (10, 20, 100, 200)
TEMPERATURE = 0.07
# Query rows per chunk times bank rows stays under this many similarities: 1 GiB in float32.
SIMILARITY_BUDGET = 1 << 28


@torch.no_grad()
def local_features(trunk, dataset, device, batch_size=256, num_workers=0, desc="features"):
    """(L2-normalised features, labels) of this process's rank slice of `dataset`."""
    loader = torch.utils.data.DataLoader(
        rank_slice(dataset),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        # A loader draws its workers' base seed from its generator; a private one leaves the global
        # random stream (a training run's) untouched.
        generator=torch.Generator(),
    )
    features, labels = [], []
    for images, targets in progress_bar(loader, rank_and_world()[0] == 0, desc=desc, unit="batch", leave=False):
        features.append(F.normalize(trunk(images.to(device, non_blocking=True)).float(), dim=1))
        labels.append(targets.to(device))
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def weighted_knn_hits(
    bank, bank_labels, queries, query_labels, num_classes, ks=KS, temperature=TEMPERATURE, chunk=None
):
    """{k: (top-1 hits, top-5 hits)} of the weighted vote, as counts that processes can sum.

    `bank` and `queries` are L2-normalised rows; ks larger than the bank are left out. Queries are
    scored `chunk` at a time (default: as many as keep chunk x bank similarities within
    SIMILARITY_BUDGET).
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
    scored, *counts = all_reduce_sum([len(queries)] + [n for k in sorted(hits) for n in hits[k]], device)
    metrics = {}
    for i, k in enumerate(sorted(hits)):
        metrics[f"top1_k{k}"] = 100 * counts[2 * i] / scored
        metrics[f"top5_k{k}"] = 100 * counts[2 * i + 1] / scored
    return metrics
