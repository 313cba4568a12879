"""`python pretrain/main.py`: what it checks before anything is written, and the processes it starts."""

import pytest

from common.errors import ConfigError, DatasetError
from pretrain.main import configure, main, parse_args


def test_missing_data_root_fails_before_training(tiny_pretrain, tmp_path):
    with pytest.raises(DatasetError, match="does-not-exist"):
        main(parse_args(tiny_pretrain.args(tmp_path / "does-not-exist", tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_a_root_of_only_unreadable_images_fails_before_anything_is_written(tiny_pretrain, tmp_path):
    for name in ("a/1.jpg", "b/2.jpg"):
        (tmp_path / "root" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / name).write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DatasetError, match="none of its 2 images can be read"):
        main(parse_args(tiny_pretrain.args(tmp_path / "root", tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_resume_from_a_missing_file_says_it_is_missing(train_root, tiny_pretrain, tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(ConfigError, match=f"--resume {missing}: no such file"):
        configure(parse_args(["--resume", str(missing), *tiny_pretrain.args(train_root, tmp_path)]))


@pytest.mark.slow
def test_two_cpu_processes_through_main(train_root, tiny_pretrain, tmp_path):
    main(parse_args(["--num-gpus", "2", *tiny_pretrain.args(train_root, tmp_path, "SOLVER.MAX_ITER", "3")]))
    checkpoint = tiny_pretrain.final_state(tmp_path)
    assert checkpoint["iteration"] == 2 and checkpoint["model"]["queue_ptr"].item() == 8  # 3 x 8 keys mod 16
    assert "2 process(es)" in (tmp_path / "log.txt").read_text()
