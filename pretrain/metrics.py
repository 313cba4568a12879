"""What a pretraining run reports: the log, metrics.json and TensorBoard (detectron2's outputs),
optionally mirrored to Weights & Biases, and the window of step outputs averaged between two reports."""

import datetime
import importlib.util
import json
import logging
import math
import os
import resource
import secrets
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from common.errors import ConfigError
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
        # Opened at the first line: a run refused before it logs anything leaves no log.txt behind.
        handlers.append(logging.FileHandler(Path(output_dir) / "log.txt", delay=True))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)


def _logged_iteration(line):
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):  # a line cut short by a kill mid-write
        return -1


# Keys that earlier runs wrote under another name: "top1" read like an ImageNet top-1, but it is the
# contrastive task's instance-discrimination accuracy.
RENAMED = {"top1": "instance_acc"}


def read_metrics(path):
    """The lines of a run's metrics.json as dicts, in the current key names (older runs' keys renamed);
    a line cut short by a kill mid-write is left out."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "iteration" in row:
            rows.append({RENAMED.get(key, key): value for key, value in row.items()})
    return rows


def peak_memory(device):
    """("max_mem", MiB) the process's tensors peaked at on a CUDA device; on the CPU ("max_rss", MiB), the
    process's peak resident memory (DataLoader workers not included), which also counts code and buffers."""
    if device.type == "cuda":
        return "max_mem", torch.cuda.max_memory_allocated(device) / 2**20
    return "max_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def progress_line(metrics, iteration, max_iter, iters_per_epoch, images_per_step, memory):
    """detectron2's periodic log line for 0-based `iteration`: eta, epoch, iteration, each loss and
    score, lr, img/s, the share of time spent waiting for data, and `memory` (name, MiB)."""
    seconds_per_iter = images_per_step / metrics["img_per_s"]
    eta = datetime.timedelta(seconds=round((max_iter - iteration - 1) * seconds_per_iter))
    names = [name for name in sorted(metrics) if name.startswith("loss") or name == "instance_acc"]
    scores = "  ".join(f"{name}: {metrics[name]:.4g}" for name in names)
    return (
        f"eta: {eta}  epoch: {iteration // iters_per_epoch}/{math.ceil(max_iter / iters_per_epoch)}  "
        f"iter: {iteration}/{max_iter}  {scores}  lr: {metrics['lr']:.4g}  img/s: {metrics['img_per_s']:.1f}  "
        f"data: {metrics['data_time_share']:.0%}  {memory[0]}: {memory[1]:.0f}M"
    )


WANDB_RUN_ID = "wandb_run_id"


def wandb_project(cfg):
    """The Weights & Biases project to mirror the scalars to (WANDB.PROJECT, else $WANDB_PROJECT), or None."""
    project = cfg.WANDB.PROJECT or os.environ.get("WANDB_PROJECT", "")
    if not project or importlib.util.find_spec("wandb") is not None:
        return project or None
    if cfg.WANDB.PROJECT:
        raise ConfigError(f"WANDB.PROJECT is {project!r} but wandb is not installed: pip install wandb, or unset it")
    logger.warning("WANDB_PROJECT is set but wandb is not installed: the run is not mirrored to Weights & Biases")
    return None


def _open_wandb_run(output_dir, project, config):
    """The run of `output_dir`: the id kept there is resumed, so that a requeued job continues its curves."""
    import wandb

    id_path = Path(output_dir) / WANDB_RUN_ID
    if id_path.is_file():
        run_id = id_path.read_text().strip()
    else:
        run_id = secrets.token_hex(4)
        with atomic_path(id_path) as tmp:
            tmp.write_text(run_id)
    return wandb.init(
        project=project, id=run_id, resume="allow", dir=output_dir, name=Path(output_dir).name, config=config
    )


class MetricsWriter:
    """metrics.json JSON lines and TensorBoard scalars, on rank 0; the same scalars go to the Weights &
    Biases run of `wandb_project` when one is given. Each line also holds the epochs done ("epoch").

    Lines of iterations from `start_iter` on are dropped first: a run killed after logging them but
    before its checkpoint redoes those iterations, which must not appear twice.
    """

    def __init__(self, output_dir, start_iter, iters_per_epoch, wandb_project=None, config=None):
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
        self.iters_per_epoch = iters_per_epoch
        self.wandb = _open_wandb_run(output_dir, wandb_project, config) if wandb_project else None

    def write(self, iteration, metrics):
        epoch = (iteration + 1) / self.iters_per_epoch
        self.json.write(json.dumps({"iteration": iteration, "epoch": epoch, **metrics}, sort_keys=True) + "\n")
        self.json.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, iteration)
        if self.wandb:
            # Steps count the iterations done: wandb's steps start at 0 (the initial kNN is at iteration
            # -1) and increase, and a resumed run's redone iterations are dropped by wandb, not doubled.
            self.wandb.log(metrics, step=iteration + 1)

    def close(self):
        self.json.close()
        self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()


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
