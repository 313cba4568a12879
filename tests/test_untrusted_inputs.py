"""Every loader of a format that can carry code (pickle, torch's zip, YAML, .npy) against malicious files
of each kind: nothing runs (a marker file stays absent) and the loader refuses with one line.

LOADERS is the list; the scan at the bottom finds every call of such a loader in the source tree and
fails for one that LOADERS does not cover, so a new loader cannot skip this tier.
"""

import ast
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import UserError

REPO = Path(__file__).resolve().parents[1]


class Reduce:
    """A pickle that calls `function(*args)` when loaded."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker):
    """Eight ways for a pickle to run code, each creating `marker` if it runs."""
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Reduce(os.system, f"touch {marker}"),
        "os.popen": Reduce(os.popen, f"touch {marker}"),
        "exec": Reduce(exec, touch),
        "eval": Reduce(eval, touch),
        "subprocess": Reduce(subprocess.call, ["touch", str(marker)]),
        "open": Reduce(open, str(marker), "w"),
        "nested": {"state_dict": {"conv1.weight": Reduce(os.system, f"touch {marker}")}},
        "protocol-0 opcodes": None,  # hand-written GLOBAL posix.system + REDUCE, below
    }


def malicious_pickles(folder, marker):
    """{kind: (path of a torch zip .pth, path of a raw .pkl)} for each payload."""
    files = {}
    for kind, payload in payloads(marker).items():
        pth, pkl = folder / f"{kind}.pth", folder / f"{kind}.pkl"
        if payload is None:
            raw = f"cposix\nsystem\n(S'touch {marker}'\ntR.".encode()
            pkl.write_bytes(raw)
            torch.save({"model": Reduce(os.system, f"touch {marker}")}, pth)
        else:
            pkl.write_bytes(pickle.dumps({"model": payload, "__author__": "x"}, protocol=2))
            torch.save({"model": payload}, pth)
        files[kind] = (pth, pkl)
    return files


def malicious_yaml(marker):
    """YAML documents whose tags would run code in an unsafe loader."""
    return {
        "apply os.system": f"SEED: !!python/object/apply:os.system ['touch {marker}']\n",
        "object/new subprocess": f"SEED: !!python/object/new:subprocess.check_call [['touch', '{marker}']]\n",
        "name exec": f"SEED: !!python/object/apply:builtins.exec [\"open('{marker}', 'w')\"]\n",
    }


# --- the loaders: each takes a malicious file's path and refuses it -----------------------------------


def _read_checkpoint(path):
    from common.checkpoint_files import read_checkpoint

    read_checkpoint(path)


def _load_backbone(path):
    from common.backbone import load_backbone

    load_backbone(path)


def _detection_weights(path):
    import torch.nn

    from detection.pretrained_weights import PretrainedWeightsCheckpointer

    PretrainedWeightsCheckpointer(torch.nn.Module())._load_file(str(path))


def _same_state_dict(path):
    """The converter's comparison with an existing OUT: an unreadable file is never the same conversion."""
    from converters.to_torchvision import same_state_dict

    assert same_state_dict(path, path) is False


def _pretrain_config(path):
    from pretrain.config import load_config

    load_config(str(path), [], world_size=1)


def _detectron2_config(path):
    from detectron2.config import get_cfg

    from common.config_files import merge_config

    merge_config(get_cfg(), str(path), [], lambda _: "")


def _run_identity(path):
    """The config a pretraining checkpoint carries, read back before a resume."""
    from pretrain.run_state import run_identity

    run_identity(path.read_text())


def _feature_cache(path):
    from transfer import features

    cached = features.cache_path(path.parent, "0" * 64, "train", "res5", [])
    cached.write_bytes(path.read_bytes())
    features.cached_features(None, "0" * 64, "train", [], cache_dir=path.parent)


# (loader, the inputs it takes, whether its refusal is already one line, the source calls it covers)
LOADERS = {
    "read_checkpoint": (_read_checkpoint, "pth pkl", True, {"common/checkpoint_files.py:read_checkpoint"}),
    "load_backbone": (_load_backbone, "pth pkl", True, set()),
    "detection_weights": (
        _detection_weights,
        "pth pkl",
        True,
        {"detection/pretrained_weights.py:PretrainedWeightsCheckpointer._load_file"},
    ),
    "converter_comparison": (_same_state_dict, "pth pkl", False, {"converters/to_torchvision.py:same_state_dict"}),
    "pretrain_config": (_pretrain_config, "yaml", True, {"common/config_files.py:merge_config"}),
    "detectron2_config": (
        _detectron2_config,
        "yaml",
        True,
        {"common/config_files.py:merge_config", "common/config_files.py:check_yaml_chain"},
    ),
    # A tag refused by yaml.safe_load, with yaml's own multi-line message.
    "checkpoint_config": (_run_identity, "yaml", False, {"pretrain/run_state.py:run_identity"}),
    # np.load refuses object arrays (allow_pickle=False); the entry is then extracted again.
    "feature_cache": (_feature_cache, "npy", False, {"transfer/features.py:cached_features"}),
}
# Calls that read only what this code wrote or shipped in the same process, never a user's file.
TRUSTED = {
    "pretrain/config.py:preset_cfg",  # the presets of pretrain/configs/
    "pretrain/engine.py:build_training",  # yaml.safe_load(cfg.dump()) of the run's own config
}


def _cases():
    for name, (loader, kinds, one_line, _) in LOADERS.items():
        for kind in kinds.split():
            yield pytest.param(loader, kind, one_line, id=f"{name}-{kind}")


@pytest.mark.parametrize("loader, kind, one_line", list(_cases()))
def test_a_malicious_file_runs_nothing_and_is_refused(tmp_path, loader, kind, one_line):
    marker = tmp_path / "ran"
    (tmp_path / "files").mkdir()
    if kind in ("pth", "pkl"):
        files = [pair[kind == "pkl"] for pair in malicious_pickles(tmp_path / "files", marker).values()]
    elif kind == "yaml":
        files = []
        for number, text in enumerate(malicious_yaml(marker).values()):
            files.append(tmp_path / "files" / f"{number}.yaml")
            files[-1].write_text(text)
    else:
        files = [tmp_path / "files" / "objects.npy"]
        np.save(files[0], np.array([Reduce(os.system, f"touch {marker}")], dtype=object), allow_pickle=True)
    for path in files:
        try:
            loader(path)
            refused = None
        except Exception as error:  # noqa: BLE001 - what matters is that nothing ran, then how it was refused
            refused = error
        assert not marker.exists(), f"{path.name} ran code through {loader.__name__}"
        if one_line:
            assert isinstance(refused, UserError) and "\n" not in str(refused), (path.name, refused)
            assert "weights_only=False" not in str(refused) and "damaged" not in str(refused)


def _loader_calls():
    """module path:qualified function of every call in the source tree that reads a format able to carry
    code: torch.load, pickle.load(s), a pickle.Unpickler, np.load, yaml's loaders and yacs's
    merge_from_file."""
    calls = set()
    for path in sorted(REPO.glob("*/**/*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith((".venv/", "tests/", "build/")) or "/.venv/" in relative:
            continue
        calls |= {f"{relative}:{where}" for where in _loader_calls_in(ast.parse(path.read_text()))}
    return calls


def _loader_calls_in(tree):
    found = set()

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            if isinstance(child, ast.Call) and _reads_code_format(child.func):
                found.add(scope)
            visit(child, inner)

    visit(tree, "")
    return found


def _reads_code_format(func):
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr in ("safe_load", "unsafe_load", "full_load", "merge_from_file", "Unpickler"):
        return True
    if func.attr not in ("load", "loads"):
        return False
    if isinstance(func.value, ast.Call):  # SomeUnpickler(file).load()
        return getattr(func.value.func, "id", "").endswith("Unpickler")
    return isinstance(func.value, ast.Name) and func.value.id in ("torch", "pickle", "yaml", "np", "numpy")


def test_every_loader_in_the_source_tree_is_in_this_tier():
    covered = set().union(*(sources for *_, sources in LOADERS.values())) | TRUSTED
    assert _loader_calls() - covered == set(), "add these loaders to LOADERS (or TRUSTED, with the reason)"
