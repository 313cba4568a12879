"""`transfer/results.py`: a transfer output folder is held by one run and never takes another checkpoint's results."""

import hashlib
import json

import pytest

from common.errors import RecordMismatchError
from common.locking import FolderInUseError
from transfer.results import output_folder


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "ckpt.pth"
    path.write_bytes(b"weights")
    return path


def write_record(folder, task, sha256):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"task": task, "weights": {"sha256": sha256}}))


def test_a_folder_holding_another_checkpoints_results_is_refused_naming_both(tmp_path, weights):
    write_record(tmp_path / "out", "voc07_svm", "0" * 64)
    with pytest.raises(
        RecordMismatchError, match=f"weights.sha256 '{'0' * 64}' -> '{hashlib.sha256(b'weights').hexdigest()}'"
    ):
        with output_folder(tmp_path / "out", "voc07_svm", weights):
            pass


def test_a_rerun_for_the_same_weights_and_task_may_replace_its_results(tmp_path, weights):
    write_record(tmp_path / "out", "voc07_svm", hashlib.sha256(b"weights").hexdigest())
    with output_folder(tmp_path / "out", "voc07_svm", weights):
        pass
    with pytest.raises(RecordMismatchError, match="task 'voc07_svm' -> 'knn'"):
        with output_folder(tmp_path / "out", "knn", weights):
            pass


def test_the_folder_is_held_for_the_run_and_a_results_file_that_does_not_read_is_not_taken_over(tmp_path, weights):
    with output_folder(tmp_path / "out", "knn", weights):
        with pytest.raises(FolderInUseError, match="is in use by pid"):
            with output_folder(tmp_path / "out", "knn", weights):
                pass
    (tmp_path / "out" / "results.json").write_text("{cut short")
    with pytest.raises(RecordMismatchError, match="holds no record"):
        with output_folder(tmp_path / "out", "knn", weights):
            pass
