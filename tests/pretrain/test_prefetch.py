"""The producer thread: the next batches are made while the step runs, errors reach the loop, and
leaving the loop stops the producer and the DataLoader workers behind it."""

import threading
import time

import pytest
import torch

from pretrain.batches import DeviceBatches, PretrainData
from pretrain.prefetch import Prefetcher

WAIT_S = 10  # far longer than a thread switch: only a producer that never runs concurrently waits so long


class Source:
    """An iterator of `n` items that records when each one's making starts and which thread makes it."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.made = n, fail_at, 0
        self.started = [threading.Event() for _ in range(n)]
        self.threads = set()
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.made == self.n:
            raise StopIteration
        index, self.made = self.made, self.made + 1
        self.started[index].set()
        self.threads.add(threading.current_thread().name)
        if index == self.fail_at:
            raise OSError(f"item {index} cannot be read")
        return index

    def close(self):
        self.closed = True


def test_the_next_item_is_made_while_the_step_runs():
    source = Source(4)
    seen = []
    for item in Prefetcher(source, depth=2):
        # A slow step that can end only once the next item is being made: a producer that made the
        # items in turn with the steps (as a plain loop does) would make it wait WAIT_S and fail.
        if item + 1 < source.n:
            assert source.started[item + 1].wait(WAIT_S), f"item {item + 1} was not made during step {item}"
        seen.append(item)
    assert seen == [0, 1, 2, 3] and source.threads == {"batch-producer"}


def test_the_producer_stays_at_most_depth_items_ahead():
    source = Source(10)
    iterator = iter(Prefetcher(source, depth=2))
    assert next(iterator) == 0
    time.sleep(0.5)  # room for a producer that ignored its queue's bound to run ahead
    # Item 0 handed over, items 1 and 2 queued, item 3 made and waiting for room.
    assert source.made <= 4
    iterator.close()


def test_an_error_in_the_producer_is_raised_in_the_loop_after_the_items_before_it():
    seen = []
    with pytest.raises(OSError, match="item 2 cannot be read"):
        for item in Prefetcher(Source(5, fail_at=2)):
            seen.append(item)
    assert seen == [0, 1]


def test_leaving_the_loop_early_stops_the_producer_and_closes_the_source():
    source = Source(100)
    for item in Prefetcher(source, depth=2):
        if item == 1:
            break
    made = source.made
    assert source.closed and made <= 5
    assert not any(thread.name == "batch-producer" for thread in threading.enumerate())
    time.sleep(0.2)
    assert source.made == made  # nothing is made after the loop


def test_nothing_is_made_while_paused():
    source = Source(10)
    prefetcher = Prefetcher(source, depth=8)
    iterator = iter(prefetcher)
    assert next(iterator) == 0
    with prefetcher.paused():
        made = source.made
        time.sleep(0.3)  # the queue has room: only the pause keeps the producer from making more
        assert source.made == made
    assert source.started[9].wait(WAIT_S)
    iterator.close()


def test_device_batches_make_views_in_the_producer_while_the_step_runs():
    """The training path itself: a loader of 4 batches, views made by the data's executor in the
    producer thread while a slow fake step runs in the training thread."""
    started = [threading.Event() for _ in range(4)]
    makers = set()

    def views_on_device(batch, indices):
        started[indices[0]].set()
        makers.add(threading.current_thread().name)
        return batch

    loader = [(torch.full((2,), float(i)), [i]) for i in range(4)]
    data = PretrainData(None, loader, None, False, views_on_device, None)
    seen = []
    for views in DeviceBatches(data, torch.device("cpu")):
        index = int(views[0])
        if index + 1 < 4:
            assert started[index + 1].wait(WAIT_S), f"batch {index + 1} was not made during step {index}"
        seen.append(index)
    assert seen == [0, 1, 2, 3] and makers == {"batch-producer"}


def test_without_depth_device_batches_make_each_batch_when_asked():
    makers = set()

    def views_on_device(batch, indices):
        makers.add(threading.current_thread().name)
        return batch

    data = PretrainData(None, [(torch.zeros(1), [0])] * 3, None, False, views_on_device, None)
    assert len(list(DeviceBatches(data, torch.device("cpu"), depth=0))) == 3
    assert makers == {threading.current_thread().name}
