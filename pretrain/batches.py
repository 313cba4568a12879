"""The batches a pretraining process trains on: the data set, the loader and the view executor that
DATA.AUGMENT selects, and each batch's views delivered on the training device."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pretrain.data import EncodedImageFolder, PretrainImageFolder, collate_encoded, decode_batch
from pretrain.loader import ResumableDistributedSampler, build_loader, fit_shared_memory
from pretrain.prefetch import DEPTH, Prefetcher
from pretrain.views.batched import BatchedViews
from pretrain.views.per_image import normalize
from pretrain.views.spec import ViewSet


@dataclass
class PretrainData:
    dataset: PretrainImageFolder
    loader: torch.utils.data.DataLoader
    sampler: ResumableDistributedSampler
    batched: bool
    views_on_device: Callable  # (loader batch, indices) -> Views of normalised batches on the device
    stream: torch.cuda.Stream | None  # where the views are made on a GPU


def build_data(cfg, device, rank, world_size, view_dtype=torch.float32, memory_format=torch.contiguous_format):
    """The data set, loader and view executor of DATA.AUGMENT for one process of `world_size`."""
    view_set = ViewSet.from_cfg(cfg)
    batched = cfg.DATA.AUGMENT == "batched" or (cfg.DATA.AUGMENT == "auto" and device.type == "cuda")
    if batched:
        dataset, batched_views = EncodedImageFolder(cfg.DATA.ROOT, view_set, cfg.SEED), BatchedViews(view_set)

        def views_on_device(encoded, indices):
            images, indices = decode_batch(encoded, indices, dataset, device)
            return batched_views(images, dataset.view_params(indices), view_dtype, memory_format)
    else:
        dataset = PretrainImageFolder(cfg.DATA.ROOT, view_set, cfg.SEED)

        def views_on_device(views, indices):
            return normalize(views, device, view_dtype, memory_format)

    # A batch in the workers' shared memory: uint8 views, or JPEG bytes (ImageNet's average is ~110 KiB).
    image_bytes = 128 * 1024 if batched else sum(3 * view.size**2 for view in view_set.views.flat())
    fit_shared_memory(image_bytes * cfg.SOLVER.BATCH_SIZE // world_size, cfg.DATA.NUM_WORKERS)
    # Pinned memory speeds up the copy of finished views; JPEG bytes are read by the decoder on the host.
    loader, sampler = build_loader(
        dataset,
        cfg.SOLVER.BATCH_SIZE // world_size,
        rank,
        world_size,
        cfg.SEED,
        cfg.DATA.NUM_WORKERS,
        pin_memory=device.type == "cuda" and not batched,
        collate_fn=collate_encoded if batched else None,
    )
    # One stream for the whole run: the caching allocator keeps freed blocks per stream.
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    return PretrainData(dataset, loader, sampler, batched, views_on_device, stream)


class DeviceBatches:
    """The views of each batch of one epoch of `data.loader`, on the device (build it after
    data.sampler.set_epoch and data.dataset.set_epoch, and iterate it once).

    A producer thread (pretrain/prefetch.py) receives, decodes and makes the views of up to `depth`
    batches ahead while the training thread runs its step; `depth` 0 makes each batch only when the
    loop asks for it. On a GPU the views are made on `data.stream`, and the training stream waits for
    an event recorded after them, not for whatever that stream queued since.
    """

    def __init__(self, data, device, depth=DEPTH):
        self.data, self.device = data, device
        # The loader's workers start here, in the training thread, not in the producer.
        batches = _views_made(data, iter(data.loader))
        cuda = device.type == "cuda"
        self.prefetcher = Prefetcher(batches, depth, (lambda: torch.cuda.set_device(device)) if cuda else None)
        self.batches = self.prefetcher if depth else batches

    def paused(self):
        """A block within which no batch is being made (see Prefetcher.paused)."""
        return self.prefetcher.paused()

    def __iter__(self):
        for views, made in self.batches:
            if made is not None:
                training = torch.cuda.current_stream(self.device)
                training.wait_event(made)
                for view in views.flat():
                    view.record_stream(training)  # made on the side stream, freed after their use on `training`
            yield views


def _views_made(data, loader):
    """(views, event recorded after them on the side stream, or None on the CPU) of each batch of `loader`."""
    side = data.stream
    for batch, indices in loader:
        if side is None:
            yield data.views_on_device(batch, indices), None
            continue
        with torch.cuda.stream(side):
            views = data.views_on_device(batch, indices)
            made = torch.cuda.Event()
            made.record(side)
        yield views, made
