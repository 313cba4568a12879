"""What the suite runs on: the versions of its stack, whether detectron2 has its compiled ops, and the
line every entry point logs at start (stack, GPUs, git commit, config hash), so that a log says what
produced it.

The detectron2 this suite's set-up builds (``tools/build_detectron2.py``) has no C++ extension: its
``detectron2._C`` is a Python placeholder whose ops raise an error naming the fix. An upstream build
has the real extension module. Code that can use a compiled op when present asks
``DETECTRON2_HAS_COMPILED_OPS`` (the fast COCO evaluator, say).
"""

import hashlib
import importlib.machinery
import importlib.util
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _has_compiled_ops():
    spec = importlib.util.find_spec("detectron2._C")
    return (
        spec is not None
        and spec.origin is not None
        and spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    )


DETECTRON2_HAS_COMPILED_OPS = _has_compiled_ops()


def describe():
    """One line naming the stack's versions, whether detectron2's compiled ops are present, and the GPUs."""
    import detectron2
    import numpy as np
    import torch
    import torchvision

    ops = "with compiled ops (_C)" if DETECTRON2_HAS_COMPILED_OPS else "pure Python (no _C)"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = f"CUDA {torch.version.cuda}, {len(names)} GPU(s): {', '.join(names)}"
    else:
        gpus = f"CUDA {torch.version.cuda or 'not built'}, no GPU visible"
    return (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"detectron2 {detectron2.__version__} {ops}, numpy {np.__version__}, {gpus}"
    )


def git_commit(root=REPO):
    """The checkout's commit, with "+uncommitted changes" when tracked files differ from it; None outside a
    git checkout (an installed copy, an exported tarball) or without git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("+uncommitted changes" if dirty.returncode else "")


def config_hash(config):
    """A short digest of a resolved config: its YAML text, or a script's flags as a dict (vars(args));
    two logs with the same hash ran the same config."""
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def startup_line(config):
    """What an entry point logs first: the stack and GPUs, the git commit and the hash of `config` (see
    config_hash)."""
    commit = git_commit() or "none (not a git checkout)"
    return f"environment: {describe()}; git commit {commit}; config sha256 {config_hash(config)}"
