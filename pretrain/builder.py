"""CLSA: Contrastive Learning with Stronger Augmentations (Wang & Qi, 2021) on a MoCo v2 base.

The losses are eq. 1 (contrastive) and eq. 4 (distributional divergence, DDM) of the paper; the
model, queue and momentum encoder are MoCo's (He et al., 2020; Chen et al., 2020).
"""

import contextlib
import copy
import functools

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from common.distributed import rank_and_world
from common.trunk import resnet


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of `num_splits` sub-batches, as if each were
    on its own GPU (MoCo's one-GPU demo): sample i is in sub-batch i % num_splits. The running
    statistics are the mean over the sub-batches', so evaluation is plain BatchNorm2d, and the
    parameters and buffers keep BatchNorm2d's names.
    """

    def __init__(self, num_features, num_splits, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, input):
        if not self.training:
            return super().forward(input)
        n, c, h, w = input.shape
        g = self.num_splits
        if n % g:
            raise ValueError(f"split batch norm: a batch of {n} does not split into {g} equal sub-batches")
        self.num_batches_tracked.add_(1)
        # One channel per (sub-batch, channel): BN's batch statistics are then each sub-batch's own.
        mean, var = self.running_mean.repeat(g), self.running_var.repeat(g)
        out = F.batch_norm(
            input.reshape(n // g, g * c, h, w),
            mean,
            var,
            self.weight.repeat(g),
            self.bias.repeat(g),
            True,
            self.momentum,
            self.eps,
        )
        # Each sub-batch moved its copy of the running statistics; they move by the mean of those steps,
        # so that momentum 0 leaves them exactly as they were (MODEL.CHECKPOINT_STRONG's recomputation).
        self.running_mean.add_((mean.view(g, c) - self.running_mean).mean(dim=0))
        self.running_var.add_((var.view(g, c) - self.running_var).mean(dim=0))
        return out.view(n, c, h, w)


def build_encoder(arch, dim=128, mlp_hidden=2048, split_bn_groups=1):
    """torchvision `arch` whose `fc` is the projection head Linear(d, hidden)-ReLU-Linear(hidden, dim),
    with SplitBatchNorm over `split_bn_groups` sub-batches when that is more than 1."""
    norm = {"norm_layer": functools.partial(SplitBatchNorm, num_splits=split_bn_groups)} if split_bn_groups > 1 else {}
    encoder = resnet(arch, **norm)
    encoder.fc = nn.Sequential(
        nn.Linear(encoder.fc.in_features, mlp_hidden), nn.ReLU(inplace=True), nn.Linear(mlp_hidden, dim)
    )
    return encoder


def contrastive_loss(logits, labels):
    """Eq. 1: cross-entropy of each query's positive among the bank, mean over the batch."""
    return F.cross_entropy(logits, labels)


def ddm_loss(weak_similarities, strong_similarities, ddm_temperature):
    """Eq. 4 summed over every (weak, strong) pair, each pair's term a mean over the batch.

    Both arguments are lists of N x B cosine similarities of L2-normalised queries with the bank.
    The target is the weak query's distribution over the bank, detached; the prediction is the strong
    query's, taken with log_softmax (log(softmax) underflows to -inf at low temperature or in bf16).
    The paper says only that the loss is "the sum over the stronger augmentations"; like the
    reference code, CLSA-Multi pairs every weak view with every strong view (25 terms). Each pair's
    cross-entropy is bilinear in (target, log-prediction), so the pair sum is one dot product of the
    summed targets with the summed log-predictions: one log_softmax per strong view, not per pair.
    """
    target = sum(torch.softmax(s.detach() / ddm_temperature, dim=1) for s in weak_similarities)
    log_prediction = sum(torch.log_softmax(s / ddm_temperature, dim=1) for s in strong_similarities)
    return -(target * log_prediction).sum(dim=1).mean()


@torch.no_grad()
def _all_gather(tensor):
    """Concatenation of `tensor` from every process along dim 0, rank 0's first (no gradient)."""
    _, world = rank_and_world()
    if world == 1:
        return tensor
    tensor = tensor.contiguous()
    gathered = tensor.new_empty((world * tensor.shape[0], *tensor.shape[1:]))
    dist.all_gather_into_tensor(gathered, tensor)
    return gathered


class CLSA(nn.Module):
    """Query encoder, momentum key encoder and queue; `forward` returns the losses.

    Args:
        arch (str): torchvision backbone of both encoders. Default "resnet50".
        dim (int): projection dimension. Default 128.
        mlp_hidden (int): hidden width of the projection head. Default 2048.
        queue_size (int): K, keys kept in the FIFO queue; a multiple of the global batch. Default 65536.
        momentum (float): key encoder momentum alpha. Default 0.999.
        temperature (float): tau of the contrastive loss. Default 0.2.
        ddm_temperature (float): temperature of both DDM distributions. Default 0.2.
        ddm_weight (float): beta, weight of the strong-view loss. Default 1.0.
        strong_loss (str): "ddm" (CLSA) or "contrastive" (Table 4 ablations: eq. 1 on the strong
            queries). Default "ddm".
        shuffle_bn (bool): shuffle the key batch across processes before the key encoder (MoCo's
            shuffle-BN), and across the split-BN sub-batches within a process. Default True.
        split_bn_groups (int): BN statistics of both encoders over this many sub-batches of each
            process's batch (SplitBatchNorm; 1: the whole batch). With shuffle_bn, one process keeps
            the BN regime of as many GPUs. Default 1.
        checkpoint_strong (bool): keep no activations of the strong queries' forward pass and recompute
            them in the backward pass (activation checkpointing): CLSA-Multi's five strong views hold
            about half its activation memory. Same gradients and BN statistics. Default False.

    The bank is all keys of the current global batch followed by the queue, so the positive of query i
    on global rank r is column r * N + i.
    """

    def __init__(
        self,
        arch="resnet50",
        dim=128,
        mlp_hidden=2048,
        queue_size=65536,
        momentum=0.999,
        temperature=0.2,
        ddm_temperature=0.2,
        ddm_weight=1.0,
        strong_loss="ddm",
        shuffle_bn=True,
        split_bn_groups=1,
        checkpoint_strong=False,
    ):
        super().__init__()
        if strong_loss not in ("ddm", "contrastive"):
            raise ValueError(f"strong_loss must be 'ddm' or 'contrastive', got {strong_loss!r}")
        self.momentum = momentum
        self.temperature = temperature
        self.ddm_temperature = ddm_temperature
        self.ddm_weight = ddm_weight
        self.strong_loss = strong_loss
        self.shuffle_bn = shuffle_bn
        self.split_bn_groups = split_bn_groups
        self.checkpoint_strong = checkpoint_strong

        self.encoder_q = build_encoder(arch, dim, mlp_hidden, split_bn_groups)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad_(False)  # updated by momentum only
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        # A tensor, so that advancing it never waits for the device.
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update_key_encoder(self):
        key_params = list(self.encoder_k.parameters())
        torch._foreach_mul_(key_params, self.momentum)
        torch._foreach_add_(key_params, list(self.encoder_q.parameters()), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys):
        queue_size = self.queue.shape[0]
        if queue_size % keys.shape[0]:
            raise ValueError(
                f"MODEL.QUEUE_SIZE ({queue_size}) must be a multiple of the global batch "
                f"({keys.shape[0]}) so that the queue is replaced in whole batches"
            )
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % queue_size
        self.queue.index_copy_(0, slots, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % queue_size)

    @torch.no_grad()
    def global_keys(self, im_k):
        """Normalised keys of the whole global batch, in global sample order."""
        rank, world = rank_and_world()
        if not self.shuffle_bn or world * self.split_bn_groups == 1:
            return _all_gather(F.normalize(self.encoder_k(im_k).float(), dim=1))
        # Shuffle-BN: each process's BN (each sub-batch's, under split BN) sees a random part of the
        # global batch, so batch statistics cannot tell the positive key from the others (MoCo, section 3.3).
        images = _all_gather(im_k)
        perm = torch.randperm(images.shape[0], device=images.device)
        if world > 1:
            dist.broadcast(perm, src=0)
        n = im_k.shape[0]
        mine = images[perm[rank * n : (rank + 1) * n]]
        if not im_k.is_contiguous():
            mine = mine.contiguous(memory_format=torch.channels_last)
        shuffled = _all_gather(F.normalize(self.encoder_k(mine).float(), dim=1))
        return shuffled[torch.argsort(perm)]

    def encode_strong(self, x):
        if not self.checkpoint_strong or not torch.is_grad_enabled():
            return self.encoder_q(x)
        return checkpoint(self.encoder_q, x, use_reentrant=False, context_fn=self._recompute_without_bn_updates)

    @contextlib.contextmanager
    def _frozen_bn_statistics(self):
        # The recomputation in the backward pass must not count the batch in BN's running statistics
        # a second time. Momentum 0 keeps them as they are while BN saves the same tensors as in the
        # forward pass, which checkpoint requires; the batch counter is put back afterwards.
        norms = [m for m in self.encoder_q.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        for m in norms:
            m.momentum = 0.0
        try:
            yield
        finally:
            for m, (momentum, count) in zip(norms, saved):
                m.momentum = momentum
                m.num_batches_tracked.copy_(count)

    def _recompute_without_bn_updates(self):
        return contextlib.nullcontext(), self._frozen_bn_statistics()

    def forward(self, im_k, weak, strong):
        """im_k: key views (N x 3 x H x W); weak, strong: lists of query views (N x 3 x h x w).

        Returns a dict of scalars: "loss" (to minimise), its parts "loss_contrastive" (eq. 1 summed
        over weak queries), "loss_ddm" or "loss_strong_contrastive" (summed over strong queries), and
        "instance_acc" (the instance-discrimination accuracy: how often the first query's positive key
        has the highest logit among the keys and the queue).
        """
        if strong and not weak and self.strong_loss == "ddm":
            raise ValueError("the DDM loss needs at least one weak view as its target")
        features = [self.encoder_q(x) for x in weak] + [self.encode_strong(x) for x in strong]
        with torch.no_grad():
            self.momentum_update_key_encoder()
            keys = self.global_keys(im_k)
        # Similarities and losses in fp32 whatever the autocast around the encoders.
        with torch.autocast(device_type=im_k.device.type, enabled=False):
            bank = torch.cat([keys, self.queue])
            similarities = [F.normalize(f.float(), dim=1) @ bank.T for f in features]
            weak_sim, strong_sim = similarities[: len(weak)], similarities[len(weak) :]
            rank, _ = rank_and_world()
            labels = torch.arange(im_k.shape[0], device=im_k.device) + rank * im_k.shape[0]
            out = {}
            if weak:
                out["loss_contrastive"] = sum(contrastive_loss(s / self.temperature, labels) for s in weak_sim)
            if strong and self.strong_loss == "ddm":
                out["loss_ddm"] = ddm_loss(weak_sim, strong_sim, self.ddm_temperature)
            elif strong:
                out["loss_strong_contrastive"] = sum(contrastive_loss(s / self.temperature, labels) for s in strong_sim)
            out["loss"] = out.get("loss_contrastive", 0.0) + self.ddm_weight * out.get(
                "loss_ddm", out.get("loss_strong_contrastive", 0.0)
            )
            out["instance_acc"] = (similarities[0].argmax(dim=1) == labels).float().mean()
        self.dequeue_and_enqueue(keys)
        return out
