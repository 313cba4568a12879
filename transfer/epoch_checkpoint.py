"""checkpoint.pth of a transfer protocol's epoch loop: written atomically after every epoch, and
resumed by a rerun with the same --output-dir only if it was written for the same weights and the
same values of the flags that define the run."""

from pathlib import Path

from common.checkpoint_files import read_checkpoint
from common.distributed import rank_and_world
from common.io import atomic_torch_save
from common.records import check_record

FIX = "rerun with those or use another --output-dir"


def _flag(name):
    return f"--{name.replace('_', '-')}"


class EpochCheckpoint:
    """`flags` (e.g. preset="clsa", epochs=100) are saved with the state and must match on resume,
    as must the weights' sha256; a difference is named as its command-line flag."""

    def __init__(self, output_dir, weights_sha256, **flags):
        self.path = Path(output_dir) / "checkpoint.pth"
        self.record = {"weights_sha256": weights_sha256, **flags}

    def _shown(self, record):
        return {(_flag(k) if k != "weights_sha256" else "--weights (sha256)"): record.get(k) for k in self.record}

    def resume(self, **stateful):
        """The saved state (its "epoch", "history", ...) after loading each of `stateful` (an object
        with load_state_dict) from the entry of its name; None if there is no checkpoint yet.
        CheckpointError if it is unreadable, RecordMismatchError if another run wrote it."""
        if not self.path.is_file():
            return None
        state = read_checkpoint(self.path, fix="delete it or use another --output-dir")
        check_record(self.path, self._shown(state) if isinstance(state, dict) else None, self._shown(self.record), FIX)
        for name, target in stateful.items():
            target.load_state_dict(state[name])
        if rank_and_world()[0] == 0:
            print(f"resumed from {self.path} at epoch {state['epoch']}")
        return state

    def save(self, stateful, **state):
        """Writes the state dicts of `stateful` by name, `state` and the run's record (rank 0 only)."""
        if rank_and_world()[0] == 0:
            saved = {name: target.state_dict() for name, target in stateful.items()}
            atomic_torch_save({**saved, **state, **self.record}, self.path)
