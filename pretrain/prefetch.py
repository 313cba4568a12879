"""Making the next batches in a background thread while the training thread runs its step.

The training thread spends most of a step waiting: for the GPU in backward, or in the optimizer.
A producer thread uses that time to receive the next batch from the DataLoader workers, decode it
and make its views, so that by construction, not by luck of kernel queueing, the next batch is
ready when the step ends. PyTorch releases the GIL in its kernels and in its waits, so both threads
make progress on the host.
"""

import queue
import threading
from contextlib import contextmanager

# Batches made ahead of the step: one hides a batch's preparation behind a step, a second absorbs
# the jitter of slow batches (a large JPEG, a worker that falls behind) without holding much memory.
DEPTH = 2
_DONE = object()
_POLL_S = 0.05


class _Failed:
    def __init__(self, error):
        self.error = error


class Prefetcher:
    """Iterates over `batches` (an iterator) through a producer thread that stays up to `depth` items
    ahead. `start()`, if given, runs first in the producer thread (thread-local state such as the
    CUDA device). An error in the producer is raised in the consumer.

    Leaving the loop early (a `break`, an error) stops the producer, waits for it and closes
    `batches`, so no batch is made after the loop. Iterate once.
    """

    def __init__(self, batches, depth=DEPTH, start=None):
        self.batches, self.depth, self.start = batches, depth, start
        self._making = threading.Lock()  # held by the producer while it makes an item

    @contextmanager
    def paused(self):
        """Within this block the producer makes nothing: for work that must not run beside it, such
        as forking DataLoader workers, which is safe only while no other thread is inside a library."""
        with self._making:
            yield

    def __iter__(self):
        ready = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(ready, stop), name="batch-producer", daemon=True)
        producer.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
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
            # Now that no thread runs it, end the source: a generator over a DataLoader stops its workers.
            if hasattr(self.batches, "close"):
                self.batches.close()

    def _produce(self, ready, stop):
        try:
            if self.start:
                self.start()
            while not stop.is_set():
                with self._making:
                    item = next(self.batches, _DONE)
                if not _put(ready, item, stop) or item is _DONE:
                    return
        except BaseException as error:  # handed to the consumer, which raises it with its traceback
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
