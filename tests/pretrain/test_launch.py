"""`pretrain/launch.py` and the flags of `pretrain/main.py` that choose what a run continues from."""

import pytest

from common.locking import FolderInUseError, output_lock
from pretrain import launch
from pretrain.main import parse_args


def test_a_second_run_into_a_folder_in_use_is_refused_before_it_writes_anything(train_root, tiny_pretrain, tmp_path):
    output_dir = tmp_path / "out"
    cfg, plan = launch.configure("", tiny_pretrain.args(train_root, output_dir)[2:])
    with output_lock(output_dir):  # another run holds the folder
        with pytest.raises(FolderInUseError, match=rf"{output_dir} is in use by pid \d+ on "):
            launch.run(cfg, plan)
    assert [path.name for path in output_dir.iterdir()] == [".lock"]


def test_resume_alone_means_auto_and_a_path_is_kept():
    assert parse_args(["--resume"]).resume == "auto"
    assert parse_args(["--resume", "out/model_0000009.pth", "SEED", "1"]).resume == "out/model_0000009.pth"
    assert parse_args(["SEED", "1"]).resume == ""


@pytest.mark.parametrize("key", ["DATA.ROOT", "SEED"])
def test_resume_that_swallowed_a_config_key_is_one_line_naming_it(capsys, key):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--config-file", "x.yaml", "--resume", key, "/x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --resume took the config key {key}") and len(err.splitlines()) == 1
