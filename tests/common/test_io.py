import errno
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from common.errors import OutputFolderError
from common.io import atomic_path, atomic_write_json, sha256_file

REPO = Path(__file__).resolve().parents[2]


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json({"ap": 1.0}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a file")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"ap": 1.0}
    assert list(tmp_path.iterdir()) == [target], "no temporary file may be left behind"


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    atomic_write_json({}, tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{}")
    assert (tmp_path / "a.json").stat().st_mode == (tmp_path / "b.json").stat().st_mode


def test_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=1000) == hashlib.sha256(data).hexdigest()


WRITER = (
    "import sys, time; from common.io import atomic_path\n"
    "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half'); print(flush=True); time.sleep(600)"
)


def test_a_writer_removes_what_a_killed_writer_left_and_keeps_a_live_writers_file(tmp_path):
    target = tmp_path / "model.pth"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE)
    writer.stdout.readline()
    (live,) = tmp_path.glob(".model.pth.*.tmp")
    atomic_write_json({}, tmp_path / "results.json")
    assert live.exists()
    writer.kill()
    writer.wait()
    atomic_write_json({}, tmp_path / "results.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_full_disk_names_the_folder_and_its_free_space(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    message = rf"no space left to write to {tmp_path} \(\d+ MiB free on its device\)"
    with pytest.raises(OutputFolderError, match=message):
        atomic_write_json({}, tmp_path / "results.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_one_error_naming_it(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputFolderError, match=f"cannot write to {tmp_path} \\(Permission denied\\)"):
            atomic_write_json({}, tmp_path / "results.json")
    finally:
        tmp_path.chmod(0o700)


def test_a_read_only_file_system_is_one_error_naming_the_folder(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputFolderError, match=f"cannot write to {tmp_path} \\(Read-only file system\\)"):
        atomic_write_json({}, tmp_path / "results.json")


def test_an_output_folder_named_in_bytes_that_are_not_utf8_is_refused(tmp_path):
    folder = os.fsdecode(os.fsencode(tmp_path) + b"/out\xff")
    with pytest.raises(OutputFolderError, match="its name is not valid UTF-8"):
        atomic_write_json({}, Path(folder) / "results.json")
    assert list(tmp_path.iterdir()) == []
