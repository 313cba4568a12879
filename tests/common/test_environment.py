import importlib.machinery
import subprocess
from pathlib import Path

from common import environment


def test_compiled_ops_are_told_by_an_extension_module(monkeypatch):
    class Spec:
        origin = f"/site-packages/detectron2/_C{importlib.machinery.EXTENSION_SUFFIXES[0]}"

    monkeypatch.setattr(environment.importlib.util, "find_spec", lambda name: Spec)
    assert environment._has_compiled_ops()
    Spec.origin = "/site-packages/detectron2/_C.py"
    assert not environment._has_compiled_ops()


def test_the_stack_line_names_the_versions_and_how_detectron2_was_built():
    import detectron2
    import torch

    line = environment.describe()
    build = "with compiled ops (_C)" if environment.DETECTRON2_HAS_COMPILED_OPS else "pure Python (no _C)"
    assert f"torch {torch.__version__}," in line and f"detectron2 {detectron2.__version__} {build}," in line


def test_git_commit_names_the_checkout_and_its_uncommitted_changes(tmp_path):
    assert environment.git_commit(tmp_path) is None  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = (tmp_path / ".git" / (tmp_path / ".git" / "HEAD").read_text().split()[1]).read_text().strip()
    assert environment.git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert environment.git_commit(tmp_path) == head + "+uncommitted changes"


def test_startup_line_names_the_stack_and_tells_configs_apart():
    import torch

    line = environment.startup_line("SEED: 0\n")
    assert line.startswith(f"environment: torch {torch.__version__},") and "git commit " in line
    digest = line.rsplit("config sha256 ", 1)[1]
    assert len(digest) == 12 and environment.startup_line("SEED: 1\n").rsplit(" ", 1)[1] != digest
    flags = {"weights": Path("a.pth"), "lr": 0.1}
    assert environment.config_hash(flags) == environment.config_hash({"lr": 0.1, "weights": Path("a.pth")})
    assert environment.config_hash(flags) != environment.config_hash({**flags, "lr": 0.2})
