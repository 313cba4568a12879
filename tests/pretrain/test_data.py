"""The data's producer thread (pretrain/data.py): the next batches are made while the step runs, errors
reach the loop, and leaving the loop stops the producer and ends the loader's iterator; and the
DATA.AUGMENT values that select the executor."""

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import ConfigError
from pretrain import image_folders
from pretrain.config import load_config
from pretrain.data import DeviceBatches, PretrainData, build_data
from pretrain.views.spec import Views, ViewSet

REPO = Path(__file__).resolve().parents[2]

WAIT_S = 10  # far longer than a thread switch: only a producer that never runs concurrently waits so long


class Loader:
    """A loader of `n` per-image batches that records when each one's making starts, which thread makes
    it, and when its iterator ends."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.made = n, fail_at, 0
        self.started = [threading.Event() for _ in range(n)]
        self.threads = set()
        self.closed = False

    def __iter__(self):
        try:
            for index in range(self.n):
                self.made += 1
                self.started[index].set()
                self.threads.add(threading.current_thread().name)
                if index == self.fail_at:
                    raise OSError(f"batch {index} cannot be read")
                yield Views(torch.full((1, 2, 2, 3), index, dtype=torch.uint8), [], []), torch.tensor([index])
        finally:
            self.closed = True


def batches_of(loader, depth=2):
    data = PretrainData(
        None, loader, None, "per_image", torch.device("cpu"), torch.float32, torch.contiguous_format, None, None
    )
    return DeviceBatches(data, depth)


def test_the_next_batch_is_made_while_the_step_runs():
    loader = Loader(4)
    seen = 0
    for views in batches_of(loader):
        assert views.key.shape == (1, 3, 2, 2) and views.key.dtype == torch.float32
        # A slow step that can end only once the next batch is being made: a producer that made the
        # batches in turn with the steps (as a plain loop does) would make it wait WAIT_S and fail.
        if seen + 1 < loader.n:
            assert loader.started[seen + 1].wait(WAIT_S), f"batch {seen + 1} was not made during step {seen}"
        seen += 1
    assert seen == 4 and loader.threads == {"batch-producer"}


def test_the_producer_stays_at_most_depth_batches_ahead():
    loader = Loader(10)
    iterator = iter(batches_of(loader, depth=2))
    next(iterator)
    time.sleep(0.5)  # room for a producer that ignored its queue's bound to run ahead
    # Batch 0 handed over, batches 1 and 2 queued, batch 3 made and waiting for room.
    assert loader.made <= 4
    iterator.close()


def test_an_error_in_the_producer_is_raised_in_the_loop_after_the_batches_before_it():
    seen = 0
    with pytest.raises(OSError, match="batch 2 cannot be read"):
        for _ in batches_of(Loader(5, fail_at=2)):
            seen += 1
    assert seen == 2


def test_leaving_the_loop_early_stops_the_producer_and_ends_the_loader_iterator():
    loader = Loader(100)
    for seen, _ in enumerate(batches_of(loader)):
        if seen == 1:
            break
    made = loader.made
    assert loader.closed and made <= 5
    assert not any(thread.name == "batch-producer" for thread in threading.enumerate())
    time.sleep(0.2)
    assert loader.made == made  # nothing is made after the loop


def test_nothing_is_made_while_paused():
    loader = Loader(10)
    batches = batches_of(loader, depth=8)
    iterator = iter(batches)
    next(iterator)
    with batches.paused():
        made = loader.made
        time.sleep(0.3)  # the queue has room: only the pause keeps the producer from making more
        assert loader.made == made
    assert loader.started[9].wait(WAIT_S)
    iterator.close()


def test_without_depth_each_batch_is_made_in_the_loop_when_asked():
    loader = Loader(3)
    assert len(list(batches_of(loader, depth=0))) == 3
    assert loader.threads == {threading.current_thread().name}


def test_the_former_augment_value_workers_is_refused_naming_per_image():
    assert load_config("", ["DATA.AUGMENT", "per_image"], world_size=1).DATA.AUGMENT == "per_image"
    with pytest.raises(ConfigError, match="DATA.AUGMENT 'workers' is now called 'per_image'"):
        load_config("", ["DATA.AUGMENT", "workers"], world_size=1)


def test_progressive_and_cmyk_jpegs_make_views_on_the_batched_path_and_the_producer_decodes_only_baseline_ones(
    tmp_path, monkeypatch
):
    """A progressive and a CMYK file in each batch of 4: the DataLoader workers decode them, so the
    producer's batch decode sees baseline JPEGs only."""
    for i in range(8):
        array = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).convert("CMYK" if i % 4 == 1 else "RGB").save(buffer, "JPEG", progressive=i % 4 == 2)
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        (tmp_path / f"c{i % 2}" / f"{i}.JPEG").write_bytes(buffer.getvalue())
    decoded = []
    real_decode = image_folders.decode_jpeg

    def decode(data, *args, **kwargs):
        decoded.extend(image_folders.jpeg_frame(x) for x in (data if isinstance(data, list) else [data]))
        return real_decode(data, *args, **kwargs)

    monkeypatch.setattr(image_folders, "decode_jpeg", decode)
    views = [[32, 0.2, 1.0]]
    opts = ["DATA.ROOT", str(tmp_path), "DATA.AUGMENT", "batched", "DATA.NUM_WORKERS", "1", "SOLVER.BATCH_SIZE", "4"]
    opts += ["DATA.KEY_VIEW", str(views[0]), "DATA.WEAK_VIEWS", str(views), "DATA.STRONG_VIEWS", "[[24, 0.1, 0.5]]"]
    cfg = load_config(str(REPO / "pretrain/configs/clsa_single.yaml"), opts, world_size=1)
    data = build_data(cfg, ViewSet.from_cfg(cfg), torch.device("cpu"), rank=0, world_size=1)
    data.sampler.set_epoch(0)
    made = [views.strong[0].shape for views in DeviceBatches(data)]
    assert made == [(4, 3, 24, 24)] * 2
    assert len(decoded) == 4 and set(decoded) == {(0xC0, 3)}  # 2 of each batch of 4
