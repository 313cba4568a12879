"""The batches a pretraining process trains on: the data set, the loader and the view executor that
DATA.AUGMENT selects, and each batch's views delivered on the training device."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pretrain.data import EncodedImageFolder, PretrainImageFolder, collate_encoded, decode_batch
from pretrain.loader import ResumableDistributedSampler, build_loader, fit_shared_memory
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


def batches_on_device(data, device):
    """The views of each batch of `data.loader`, on the device.

    On a GPU they are made on a side stream. The host runs ahead of the GPU, so the next batch's
    decoding and views run while the kernels of the step before still execute.
    """
    side = data.stream
    for batch, indices in data.loader:
        if side is None:
            yield data.views_on_device(batch, indices)
            continue
        with torch.cuda.stream(side):
            views = data.views_on_device(batch, indices)
        training = torch.cuda.current_stream(device)
        training.wait_stream(side)
        for view in views.flat():
            view.record_stream(training)  # made on `side`, freed after their use on `training`
        yield views
