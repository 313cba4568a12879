"""What a pretraining run reports: the log, metrics.json and TensorBoard (detectron2's outputs), and
the window of step outputs averaged between two reports."""

import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from common.io import atomic_path

logger = logging.getLogger("pretrain")


def setup_logging(output_dir, rank):
    """Rank 0 logs INFO to stderr and output_dir/log.txt; the other ranks only warnings, to stderr."""
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.handlers.clear()
    logger.propagate = False
    formatter = logging.Formatter(f"[%(asctime)s rank{rank} %(name)s] %(message)s", "%m/%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        handlers.append(logging.FileHandler(Path(output_dir) / "log.txt"))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)


def _logged_iteration(line):
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):  # a line cut short by a kill mid-write
        return -1


class MetricsWriter:
    """metrics.json JSON lines and TensorBoard scalars, on rank 0.

    Lines of iterations from `start_iter` on are dropped first: a run killed after logging them but
    before its checkpoint redoes those iterations, which must not appear twice.
    """

    def __init__(self, output_dir, start_iter):
        from torch.utils.tensorboard import SummaryWriter

        path = Path(output_dir) / "metrics.json"
        if path.is_file():
            kept = [
                line for line in path.read_text().splitlines(keepends=True) if -1 < _logged_iteration(line) < start_iter
            ]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(kept))
        self.json = open(path, "a")
        self.tensorboard = SummaryWriter(output_dir)

    def write(self, iteration, metrics):
        self.json.write(json.dumps({"iteration": iteration, **metrics}, sort_keys=True) + "\n")
        self.json.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, iteration)

    def close(self):
        self.json.close()
        self.tensorboard.close()


class MetricWindow:
    """The step outputs since the last report, summed on the device so that a step never waits for
    the GPU; `report` reads them once (a sync, and an all-reduce over the processes)."""

    def __init__(self):
        self._reset()

    def _reset(self):
        self.names, self.sums, self.count = None, None, 0
        self.data_time, self.start = 0.0, time.perf_counter()

    def add(self, outputs, data_time):
        """One step's outputs (a dict of scalar tensors) and the seconds it waited for its batch."""
        self.names = sorted(outputs)
        values = torch.stack([outputs[name].detach().float() for name in self.names])
        self.sums = values if self.sums is None else self.sums + values
        self.count += 1
        self.data_time += data_time

    def report(self, group, world_size, images_per_step):
        """The window's means over every process (a collective over `group`, None for one process),
        its throughput and its share of time waiting for data; starts the next window."""
        if group is not None:
            dist.all_reduce(self.sums)
        means = (self.sums / (self.count * world_size)).tolist()
        elapsed = time.perf_counter() - self.start
        metrics = {
            **dict(zip(self.names, means)),
            "img_per_s": self.count * images_per_step / elapsed,
            "data_time": self.data_time / self.count,
            "data_time_share": self.data_time / elapsed,
        }
        self._reset()
        return metrics
