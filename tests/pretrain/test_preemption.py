"""Ctrl-C stops pretraining as a scheduler's SIGTERM does: a save at the next step boundary, exit 0, an
exact resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretrain.main import main, parse_args
from pretrain.preemption import STOP_SIGNALS, StopRequest
from pretrain.run_state import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_ctrl_c_is_recorded_as_a_stop_request_instead_of_interrupting():
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        stop = StopRequest()
        signal.raise_signal(signal.SIGINT)  # would raise KeyboardInterrupt mid-step
        assert stop.agreed(None)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.mark.slow
def test_ctrl_c_to_the_foreground_group_saves_exits_0_and_resumes_exactly(
    train_root, tiny_pretrain, tmp_path, straight_run
):
    """As a terminal does, SIGINT reaches the training process and its 2 DataLoader workers at once."""
    args = tiny_pretrain.args(
        train_root, tmp_path, *tiny_pretrain.RESUME, "SOLVER.MAX_ITER", "8", "LOG_PERIOD", "1", "DATA.NUM_WORKERS", "2"
    )
    process = subprocess.Popen(
        [sys.executable, str(REPO / "pretrain/main.py"), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    metrics = tmp_path / "metrics.json"
    while not (metrics.exists() and metrics.read_text().strip()):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=240) == 0, process.stderr.read().decode()[-3000:]
    stopped_at = load_checkpoint(tmp_path / (tmp_path / "last_checkpoint").read_text())["iteration"]
    assert stopped_at < 7 and f"stop signal: saved iteration {stopped_at}" in (tmp_path / "log.txt").read_text()
    main(parse_args(["--resume", "auto", *args]))
    tiny_pretrain.assert_bitwise_equal(straight_run, tiny_pretrain.final_state(tmp_path))
