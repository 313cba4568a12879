"""Stopping a run to resume it later: the signals a scheduler sends before it stops a job, Ctrl-C, and
their record."""

import signal

import torch
import torch.distributed as dist

# SLURM and Kubernetes send SIGTERM or SIGUSR1 to every process of the job; a terminal sends SIGINT
# (Ctrl-C) to every process of the foreground group. Each saves at the next step boundary.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequest:
    """Records a STOP_SIGNALS signal so that training can checkpoint at a step boundary and exit."""

    def __init__(self):
        self.signum = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)

    def _record(self, signum, frame):
        self.signum = signum

    def agreed(self, group):
        """True on every process as soon as any process was signalled (a collective over `group`;
        None for a single process)."""
        if group is None:
            return self.signum is not None
        flag = torch.tensor([self.signum is not None], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return bool(flag.item())
