"""Makes the data order and every view of the workers path a pure function of (seed, epoch, image index).

That is what lets a run stopped mid-epoch resume bit for bit: the sampler restarts the same epoch
permutation at the batch it stopped at, and each image's random crops and colour draws depend on
neither the process count, the worker count nor what ran before. (The batched path draws its views
from (seed, rank, iteration) instead: pretrain/batched_augment.py.)
"""

import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

# Cluster preemption: schedulers (SLURM, Kubernetes) send these to every process of the job.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class SeededViews(Dataset):
    """Wraps a data set whose transform draws from torch's RNG; seeds that RNG per (seed, epoch, index).

    The process's own RNG is saved and restored around each item, so training draws (shuffle-BN's
    permutation) do not depend on how many items were loaded in the main process.
    """

    def __init__(self, dataset, seed):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        seed = int(np.random.SeedSequence((self.seed, self.epoch, index)).generate_state(1, np.uint64)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (shuffled, drop_last) that can start an epoch after `start_batch` batches."""

    def __init__(self, dataset, num_replicas, rank, batch_size, seed):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.start_batch = 0

    @property
    def batches_per_epoch(self):
        return self.num_samples // self.batch_size

    def set_epoch(self, epoch, start_batch=0):
        super().set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start_batch * self.batch_size : self.batches_per_epoch * self.batch_size])

    def __len__(self):
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


class PreemptibleDataLoader(DataLoader):
    """A DataLoader whose workers ignore STOP_SIGNALS: a preemption signal sent to the whole process
    group must not kill them before the training process has saved its checkpoint. The training
    process stops them itself, as any DataLoader does when its iterator ends or is dropped.

    The signals stay blocked while the workers are forked, so none reaches a worker before it
    ignores them; one that arrives meanwhile is delivered to the training process afterwards.
    """

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _ignore_stop_signals(worker_id):
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def build_loader(dataset, batch_size, rank, world_size, seed, num_workers, pin_memory, collate_fn=None):
    """A DataLoader over `dataset` (wrapped in SeededViews) and its resumable sampler."""
    seeded = SeededViews(dataset, seed)
    sampler = ResumableDistributedSampler(seeded, world_size, rank, batch_size, seed)
    loader = PreemptibleDataLoader(
        seeded,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
        collate_fn=collate_fn,
        worker_init_fn=_ignore_stop_signals,
    )
    return loader, sampler, seeded
