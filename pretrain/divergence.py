"""Stopping a diverged run before it saves: a checkpoint is written only of a usable state."""

import torch
import torch.distributed as dist

from common.checkpoint_files import last_saved
from common.errors import UserError
from pretrain.run_state import first_non_finite


class DivergenceError(UserError, FloatingPointError):
    """Training diverged; the fix is a setting (the learning rate, a temperature, AMP), so the entry
    point reports it as one line with exit code 2, as any mistake a user can fix."""


class DivergenceGuard:
    """Tracks the first non-finite loss on the device (no sync per step) and, when asked, checks it
    and the state a checkpoint would hold on every process."""

    def __init__(self, model, device, amp, group, output_dir):
        self.model, self.device, self.amp, self.group, self.output_dir = model, device, amp, group, output_dir
        self.first_bad_iter = torch.full((), -1, dtype=torch.long, device=device)

    def record(self, loss, iteration):
        newly_bad = ~torch.isfinite(loss.detach()) & (self.first_bad_iter < 0)
        self.first_bad_iter = torch.where(newly_bad, iteration, self.first_bad_iter)

    def check(self, iteration, probe=None):
        """Raises DivergenceError if a loss so far was not finite or, given the views of the last
        batch as `probe`, if the state a checkpoint would hold is not usable: a weight, BN statistic or
        queue entry is not finite, or the query encoder's output on the probe is not (weights that grew
        to 1e28 are finite, yet the next step overflows). Every process takes part."""
        diverged = self._state_problem(probe) if probe is not None else None
        flags = torch.stack([self.first_bad_iter, torch.tensor(int(diverged is not None), device=self.device)])
        if self.group is not None:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad_loss, bad_state = flags.tolist()
        if bad_loss < 0 and not bad_state:
            return
        what = (
            f"non-finite loss at iteration {bad_loss}"
            if bad_loss >= 0
            else f"the state after iteration {iteration} diverged ({diverged or 'on another process'})"
        )
        fix = "lower SOLVER.BASE_LR or MODEL.DDM_TEMPERATURE, or disable SOLVER.AMP"
        good = last_saved(self.output_dir)
        restart = (
            f"the last good checkpoint is {good}: {fix}, and rerun with --resume auto"
            if good
            else f"no checkpoint was saved in {self.output_dir}: {fix}, and start again"
        )
        raise DivergenceError(f"{what}; stopped without saving; {restart}")

    def _state_problem(self, probe):
        name = first_non_finite(self.model.state_dict())
        if name:
            return f"{name} is not finite"
        encoder = self.model.encoder_q
        encoder.eval()  # running statistics: the probe leaves no trace in the state
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            finite = bool(torch.isfinite(encoder(probe.key)).all())
        encoder.train()
        return None if finite else "the query encoder's output is not finite"
