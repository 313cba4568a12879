"""`pip install .` without -e: the wheel carries the presets and detection configs, and its copy, installed
into a fresh virtual environment, loads them and runs its console commands from any folder.

No network: the wheel is built with this environment's setuptools, and the fresh environment reaches
the installed dependencies through a .pth file (the suite itself comes only from the wheel).
"""

import configparser
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES = [pattern.rstrip("*") for pattern in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]


def run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of a copy of the source (building in place would leave build/ in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "LICENSE"):
        shutil.copy(REPO / name, source)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    run([*pip_wheel, "-w", str(dist), str(source)])
    (path,) = dist.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory):
    """A virtual environment holding the wheel, with this environment's packages importable after its own."""
    env = tmp_path_factory.mktemp("env")
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    site_packages = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    # A plain path line: the .pth files in it (this checkout's editable install among them) are not read.
    ours = sysconfig.get_paths()
    (Path(site_packages.strip()) / "dependencies.pth").write_text(f"{ours['purelib']}\n{ours['platlib']}\n")
    return env


def test_the_wheel_holds_every_preset_and_detection_config(wheel):
    yaml_files = [*REPO.glob("pretrain/configs/**/*.yaml"), *REPO.glob("detection/*.yaml")]
    in_repo = {path.relative_to(REPO).as_posix() for path in yaml_files}

    names = zipfile.ZipFile(wheel).namelist()

    assert in_repo and {name for name in names if name.endswith(".yaml")} == in_repo


def test_the_installed_copy_loads_every_preset_and_detection_config(fresh_env, tmp_path):
    code = textwrap.dedent(
        """
        from pathlib import Path
        from detectron2.config import get_cfg
        import detection, pretrain
        from pretrain.config import PRESETS, preset_cfg

        presets = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        print(presets, preset_cfg("clsa_single").DATA.STRONG_VIEWS)
        configs = sorted(Path(detection.__file__).parent.glob("*.yaml"))
        for config in configs:
            if not config.name.startswith("Base-"):
                cfg = get_cfg()
                cfg.merge_from_file(str(config))
        print([p.name for p in configs], Path(pretrain.__file__).parent)
        """
    )

    lines = run([str(fresh_env / "bin" / "python"), "-c", code], cwd=tmp_path).stdout.splitlines()

    assert lines[0].startswith("['clsa_multi', 'clsa_single',") and lines[0].endswith("[[96, 0.086, 0.429]]")
    assert lines[1].startswith("['Base-RCNN-C4-BN.yaml', 'coco_R50_C4.yaml'")
    assert Path(lines[1].rsplit("] ", 1)[1]).is_relative_to(fresh_env)  # the wheel's copy, not this checkout


@pytest.mark.slow
def test_every_console_command_prints_its_help_from_any_folder(wheel, fresh_env, tmp_path):
    entry_points = configparser.ConfigParser()
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points.read_string(z.read(name).decode())
    commands = list(entry_points["console_scripts"])
    assert commands == sorted(PROJECT["project"]["scripts"])

    for command in commands:
        result = run([str(fresh_env / "bin" / command), "--help"], cwd=tmp_path)
        assert result.stdout.startswith(f"usage: {command}") and "Warning" not in result.stderr, command
