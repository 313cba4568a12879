"""One writer per output folder: a second run is refused with the holder named; a dead holder's lock is
taken over."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.locking import FolderInUseError, output_lock

REPO = Path(__file__).resolve().parents[2]

# A run that holds the lock until it is killed, and a second run through the entry points' error policy.
HOLD = "import sys, time; from common.locking import output_lock\nwith output_lock(sys.argv[1]):\n" + (
    "    print('held', flush=True); time.sleep(600)"
)
SECOND = (
    "import sys; from common.cli import exit_on_user_error; from common.locking import output_lock\n"
    "def run(folder):\n    with output_lock(folder): print('ran')\nexit_on_user_error(run, sys.argv[1])"
)


@pytest.fixture
def holder(tmp_path):
    """A process holding tmp_path's lock."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_a_second_process_is_refused_with_one_line_naming_the_holder(tmp_path, holder):
    second = subprocess.run([sys.executable, "-c", SECOND, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr.splitlines() == [
        f"error: {tmp_path} is in use by pid {holder.pid} on {socket.gethostname()}; "
        "wait for that run to end or choose another output folder"
    ]


def test_the_lock_of_a_killed_holder_is_taken_over_and_its_holder_reported(tmp_path, holder, caplog):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with output_lock(tmp_path) as previous:
        assert previous == f"pid {holder.pid} on {socket.gethostname()}"
    assert f"took over the lock of pid {holder.pid}" in caplog.text


def test_a_released_lock_is_taken_without_a_takeover_and_excludes_within_one_process(tmp_path):
    with output_lock(tmp_path) as previous:
        assert previous is None
        with pytest.raises(FolderInUseError, match=f"in use by pid {os.getpid()} on"):
            with output_lock(tmp_path):
                pass
    with output_lock(tmp_path) as previous:
        assert previous is None
