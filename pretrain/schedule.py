"""When things happen in a pretraining run: the learning rate of each iteration, and which
iterations end with a checkpoint."""

import math


def learning_rate(cfg, iteration, iters_per_epoch):
    """Linear warmup, then cosine decay to 0 over the whole schedule, per iteration."""
    peak = cfg.SOLVER.BASE_LR * cfg.SOLVER.BATCH_SIZE / 256
    warmup = cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch
    total = cfg.SOLVER.EPOCHS * iters_per_epoch
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (iteration - warmup) / max(total - warmup, 1)))


class CheckpointSchedule:
    """The checkpoint that ends an iteration: model_final after the last, model_<iteration> every
    SOLVER.CHECKPOINT_PERIOD epochs, every SOLVER.CHECKPOINT_PERIOD_ITERS iterations (when not 0) and
    on a stop request; none otherwise."""

    def __init__(self, solver_cfg, iters_per_epoch, max_iter):
        self.epochs = solver_cfg.CHECKPOINT_PERIOD
        self.iters = solver_cfg.CHECKPOINT_PERIOD_ITERS
        self.iters_per_epoch, self.max_iter = iters_per_epoch, max_iter

    def name(self, iteration, stopping):
        """The checkpoint's name after 0-based `iteration`, or None."""
        done = iteration + 1
        if done == self.max_iter:
            return "model_final"
        completed_epochs, into_epoch = divmod(done, self.iters_per_epoch)
        if (
            stopping
            or (into_epoch == 0 and completed_epochs % self.epochs == 0)
            or (self.iters and done % self.iters == 0)
        ):
            return f"model_{iteration:07d}"
        return None
