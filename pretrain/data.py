"""The data a pretraining process trains on: the data set, the loader and the view executor that
DATA.AUGMENT selects, and each batch's views delivered on the training device.

A producer thread makes the next batches while the training thread runs its step. The training thread
spends most of a step waiting: for the GPU in backward, or in the optimizer. The producer uses that time
to receive the next batch from the DataLoader workers, decode it and make its views, so that by
construction, not by luck of kernel queueing, the next batch is ready when the step ends. PyTorch
releases the GIL in its kernels and in its waits, so both threads make progress on the host.
"""

import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from pretrain.image_folders import EncodedImageFolder, PerImageFolder, decode_batch
from pretrain.loader import ResumableDistributedSampler, build_loader, fit_shared_memory
from pretrain.views.batched import BatchedViews
from pretrain.views.per_image import to_model

# Batches made ahead of the step: one hides a batch's preparation behind a step, a second absorbs
# the jitter of slow batches (a large JPEG, a worker that falls behind) without holding much memory.
DEPTH = 2
_DONE = object()
_POLL_S = 0.05


@dataclass
class PretrainData:
    """One process's data set, loader and view executor, and how its views reach the model."""

    dataset: PerImageFolder | EncodedImageFolder  # the latter for the batched executor
    loader: torch.utils.data.DataLoader
    sampler: ResumableDistributedSampler
    executor: str  # "per_image" or "batched"
    device: torch.device
    view_dtype: torch.dtype
    memory_format: torch.memory_format
    batched_views: BatchedViews | None  # the batched executor; the per-image one runs in the data set
    stream: torch.cuda.Stream | None  # where the views are made on a GPU

    def views_on_device(self, batch, indices, uniforms=None):
        """The views of a loader batch (its image indices and, on the batched path, the draws of their
        views), normalised for the model on the device."""
        if self.executor == "per_image":
            return to_model(batch, self.device, self.view_dtype, self.memory_format)
        images, used = decode_batch(batch, indices, self.dataset, self.device)
        params = self.dataset.view_params(used, (indices.tolist(), uniforms))
        return self.batched_views(images, params, self.view_dtype, self.memory_format)


def build_data(
    cfg, view_set, device, rank, world_size, view_dtype=torch.float32, memory_format=torch.contiguous_format
):
    """The data set, loader and view executor of DATA.AUGMENT for one process of `world_size`, making
    the views of `view_set` (the run's ViewSet)."""
    # "auto": batched on a GPU, per image without one.
    executor = cfg.DATA.AUGMENT if cfg.DATA.AUGMENT != "auto" else "batched" if device.type == "cuda" else "per_image"
    if executor == "batched":
        dataset, batched_views = EncodedImageFolder(cfg.DATA.ROOT, view_set, cfg.SEED), BatchedViews(view_set)
        image_bytes = 128 * 1024  # JPEG bytes: ImageNet's average is ~110 KiB
    else:
        dataset, batched_views = PerImageFolder(cfg.DATA.ROOT, view_set, cfg.SEED), None
        image_bytes = sum(3 * view.size**2 for view in view_set.views.flat())  # uint8 views
    # A batch in the workers' shared memory.
    fit_shared_memory(image_bytes * cfg.SOLVER.BATCH_SIZE // world_size, cfg.DATA.NUM_WORKERS)
    # Pinned memory speeds up the copy of finished views; JPEG bytes are read by the decoder on the host.
    loader, sampler = build_loader(
        dataset,
        cfg.SOLVER.BATCH_SIZE // world_size,
        rank,
        world_size,
        cfg.SEED,
        cfg.DATA.NUM_WORKERS,
        pin_memory=device.type == "cuda" and executor == "per_image",
        collate_fn=dataset.collate if executor == "batched" else None,
    )
    # One stream for the whole run: the caching allocator keeps freed blocks per stream.
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    return PretrainData(dataset, loader, sampler, executor, device, view_dtype, memory_format, batched_views, stream)


class _Failed:
    def __init__(self, error):
        self.error = error


class DeviceBatches:
    """The views of each batch of one epoch of `data.loader`, on the device (build it after
    data.sampler.set_epoch and data.dataset.set_epoch, and iterate it once).

    A producer thread receives, decodes and makes the views of up to `depth` batches ahead while the
    training thread runs its step; `depth` 0 makes each batch only when the loop asks for it. An error
    in the producer is raised in the loop. Leaving the loop early (a `break`, an error) stops the
    producer, waits for it and ends the loader's iterator, so no batch is made after the loop. On a GPU
    the views are made on `data.stream`, and the training stream waits for an event recorded after
    them, not for whatever that stream queued since.
    """

    def __init__(self, data, depth=DEPTH):
        self.data, self.depth = data, depth
        # The loader's workers start here, in the training thread, not in the producer.
        self.batches = _views_made(data, iter(data.loader))
        self._making = threading.Lock()  # held by the producer while it makes a batch

    @contextmanager
    def paused(self):
        """Within this block the producer makes nothing: for work that must not run beside it, such
        as forking DataLoader workers, which is safe only while no other thread is inside a library."""
        with self._making:
            yield

    def __iter__(self):
        for views, made in self._produced() if self.depth else self.batches:
            if made is not None:
                training = torch.cuda.current_stream(self.data.device)
                training.wait_event(made)
                for view in views.flat():
                    view.record_stream(training)  # made on the side stream, freed after their use on `training`
            yield views

    def _produced(self):
        """self.batches, made by a producer thread that stays up to `depth` batches ahead."""
        ready = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(ready, stop), name="batch-producer", daemon=True)
        producer.start()
        try:
            while (item := ready.get()) is not _DONE:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()
            while producer.is_alive():  # a producer blocked on a full queue: make room until it sees `stop`
                try:
                    ready.get(timeout=_POLL_S)
                except queue.Empty:
                    pass
            producer.join()
            # Now that no thread runs it, end the source: dropping the loader's iterator stops its workers.
            self.batches.close()

    def _produce(self, ready, stop):
        try:
            if self.data.device.type == "cuda":
                torch.cuda.set_device(self.data.device)  # thread-local
            while not stop.is_set():
                with self._making:
                    item = next(self.batches, _DONE)
                if not _put(ready, item, stop) or item is _DONE:
                    return
        except BaseException as error:  # handed to the loop, which raises it with its traceback
            _put(ready, _Failed(error), stop)


def _put(ready, item, stop):
    """Puts `item` into `ready` unless `stop` is set first; returns whether it was put."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            pass
    return False


def _views_made(data, loader):
    """(views, event recorded after them on the side stream, or None on the CPU) of each batch of `loader`."""
    side = data.stream
    for batch in loader:
        if side is None:
            yield data.views_on_device(*batch), None
            continue
        with torch.cuda.stream(side):
            views = data.views_on_device(*batch)
            made = torch.cuda.Event()
            made.record(side)
        yield views, made
