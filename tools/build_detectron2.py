"""Corrects the detectron2 v0.6 sources of the PyPI sdist ``pb1-detectron2==0.6`` before they are built.

``tools/setup_env.sh`` runs this on the unpacked sdist, then ``pip install``s it. The result imports
and runs like upstream detectron2 from any script, in any order, on today's numpy, Pillow, Python and
torch. Only that sdist is touched: an upstream detectron2 (with its compiled ops) is never built here.

Each edit states why it exists and must match as often as it says, so a different sdist fails the set-up
instead of building something half-corrected.

Usage: python tools/build_detectron2.py SDIST_SOURCE_DIR
"""

import argparse
import re
import sys
from pathlib import Path

# numpy 1.24 removed the aliases np.bool/int/float/str/object, which v0.6 uses in about 20 places
# (np.bool_, np.int64, ... are different names and stay).
NUMPY_ALIAS = re.compile(r"\bnp\.(bool|int|float|str|object)\b")

# (file, old text, new text, occurrences, why)
EDITS = [
    (
        "setup.py",
        "    ext_modules=get_extensions(),",
        "    ext_modules=[],",
        1,
        "the sdist has no C++ sources (detectron2/layers/csrc); build the pure-Python package",
    ),
    (
        "setup.py",
        'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
        'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},',
        1,
        "get_model_zoo_configs() globs a top-level configs/ that the sdist does not have (it ships "
        "them under detectron2/model_zoo/configs), so model_zoo.get_config_file found nothing",
    ),
    (
        "setup.py",
        'find_packages(exclude=("configs", "tests*"))',
        'find_packages(exclude=("configs", "tests*", "tools*"))',
        1,
        "the sdist's tools/ would install as a top-level package named tools, which shadows this suite's",
    ),
    (
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
        1,
        "Pillow 10 removed Image.LINEAR, an alias of BILINEAR",
    ),
    (
        "detectron2/data/common.py",
        "self._rng.sample(self._fallback_candidates, k=1)",
        "self._rng.sample(sorted(self._fallback_candidates), k=1)",
        1,
        "random.sample refuses a set since Python 3.11, so MapDataset failed whenever a mapper returned None",
    ),
    (
        "detectron2/engine/hooks.py",
        "isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler)",
        "isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler)",
        2,
        "torch 2 schedulers derive from LRScheduler, not _LRScheduler: the LRScheduler hook did not "
        "checkpoint them (its two checks)",
    ),
]

# Stands in for the compiled extension, so the four modules that import it at module level import.
# The R50-C4 models need none of its ops (ROIAlign and NMS come from torchvision).
MISSING_OPS_MODULE = '''"""Placeholder for detectron2's C++ extension: this build has none.

Written by the suite's tools/build_detectron2.py.
"""

FIX = "install upstream detectron2: pip install 'git+https://github.com/facebookresearch/detectron2.git'"


def get_compiler_version():
    return "none: detectron2 built without its C++ ops"


get_cuda_version = get_compiler_version


def has_cuda():
    return False


def __getattr__(op):
    if op.startswith("__"):
        raise AttributeError(op)
    raise RuntimeError(f"detectron2._C.{op} is not available: this detectron2 was built without its C++ ops; {FIX}")
'''


class SourceMismatch(Exception):
    pass


def apply_edit(src, rel_path, old, new, occurrences):
    path = src / rel_path
    text = path.read_text()
    if text.count(old) != occurrences:
        raise SourceMismatch(f"{path}: expected {old!r} {occurrences} time(s), found it {text.count(old)}")
    path.write_text(text.replace(old, new))


def correct_sources(src):
    """Applies every edit to the unpacked sdist at ``src``; returns how many files changed."""
    if (src / "detectron2" / "_C.py").exists() or list((src / "detectron2").glob("_C*.so")):
        raise SourceMismatch(f"{src}/detectron2 already has a _C module: not the pure-Python sdist")
    for rel_path, old, new, occurrences, _why in EDITS:
        apply_edit(src, rel_path, old, new, occurrences)
    changed = {rel for rel, *_ in EDITS}
    for path in sorted((src / "detectron2").rglob("*.py")):
        text = path.read_text()
        fixed = NUMPY_ALIAS.sub(lambda m: m.group(1), text)
        if fixed != text:
            path.write_text(fixed)
            changed.add(str(path.relative_to(src)))
    (src / "detectron2" / "_C.py").write_text(MISSING_OPS_MODULE)
    return len(changed) + 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the unpacked pb1-detectron2 sdist")
    args = parser.parse_args(argv)
    try:
        n = correct_sources(args.src)
    except (SourceMismatch, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[setup] corrected {n} detectron2 source files for current numpy, Pillow, Python and torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
