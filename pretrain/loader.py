"""The pretraining DataLoader: its data order a pure function of (seed, epoch), resumable mid-epoch,
and its workers deaf to preemption signals.

With the views a function of (seed, epoch, image index) (pretrain/views/sampler.py), that is what
lets a run stopped mid-epoch resume bit for bit: the sampler restarts the same epoch permutation at
the batch it stopped at.
"""

import logging
import os
import signal

import torch.multiprocessing
from torch.utils.data import DataLoader, DistributedSampler

from pretrain.preemption import STOP_SIGNALS

logger = logging.getLogger(__name__)


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


def _init_worker(worker_id):
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def fit_shared_memory(batch_bytes, num_workers, path="/dev/shm"):
    """Share the workers' batches through files if `path` cannot hold what they prefetch.

    Each worker holds up to 2 batches ahead in shared memory. In a container with Docker's default of
    64 MB the workers would die with a bus error; torch's file_system sharing strategy is slower but
    works. Returns whether it switched (with a warning that says how to give the container more).
    """
    try:
        stats = os.statvfs(path)
    except OSError:  # no /dev/shm: not Linux, where torch shares memory otherwise
        return False
    available, needed = stats.f_frsize * stats.f_blocks, 2 * 2 * num_workers * batch_bytes  # 2x margin
    if num_workers == 0 or available >= needed:
        return False
    torch.multiprocessing.set_sharing_strategy("file_system")
    logger.warning(
        "%s holds %.0f MiB, less than the %.0f MiB that %d DataLoader workers' prefetched batches need: "
        "sharing them through files instead, which is slower. Give the container more shared memory "
        "(docker run --shm-size 16g) or lower DATA.NUM_WORKERS",
        path,
        available / 2**20,
        needed / 2**20,
        num_workers,
    )
    return True


def build_loader(dataset, batch_size, rank, world_size, seed, num_workers, pin_memory, collate_fn=None):
    """A DataLoader over `dataset` and its resumable sampler."""
    sampler = ResumableDistributedSampler(dataset, world_size, rank, batch_size, seed)
    loader = PreemptibleDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
        collate_fn=collate_fn,
        worker_init_fn=_init_worker,
    )
    return loader, sampler
