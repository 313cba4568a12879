"""Makes detectron2 v0.6 import and run on current numpy, Pillow and a build without its C++ ops.

Import this module before anything from detectron2 (``import common.d2compat``). It is the single
place where the suite adapts detectron2; on an upstream build with ``detectron2._C`` it changes
nothing about detectron2's ops.

Why each fix exists:
- detectron2 v0.6 uses ``np.bool``, ``np.int``, ``np.float``, ``np.str`` (removed in numpy 1.24) and
  ``PIL.Image.LINEAR`` (removed in Pillow 10). Current matplotlib needs numpy>=1.25, so pinning the
  old versions is not an option; the aliases are restored only where they are missing.
- The PyPI sdist ``pb1-detectron2==0.6`` ships no C++ sources, so ``detectron2._C`` does not exist.
  ``layers/deform_conv.py``, ``layers/rotated_boxes.py``, ``layers/roi_align_rotated.py`` and
  ``evaluation/fast_eval_api.py`` import it at module level. The R50-C4 Faster/Mask R-CNN models use
  none of those ops (ROIAlign and NMS come from torchvision), so a placeholder module lets the
  imports succeed, and any call into it raises an error that names the missing op and the fix.
- COCOEvaluator's fast path needs ``_C``: pass ``use_fast_impl=HAS_COMPILED_OPS``.
"""
import importlib.util
import sys
import types

import numpy as np
from PIL import Image

HAS_COMPILED_OPS = importlib.util.find_spec("detectron2._C") is not None

_NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "str": str, "object": object}


class _MissingCompiledOps(types.ModuleType):
    """Stands in for ``detectron2._C`` when detectron2 was built without its C++ extension."""

    # detectron2's environment report (default_setup logs it) asks for these three.
    @staticmethod
    def get_compiler_version():
        return "none: pure-Python detectron2 build without _C (common/d2compat.py)"

    get_cuda_version = get_compiler_version

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, op):
        if op.startswith("__"):
            raise AttributeError(op)
        raise RuntimeError(
            f"detectron2._C.{op} is not available: this detectron2 was built without its C++ ops "
            "(the pb1-detectron2 sdist has no sources). The R50-C4 configs of this suite do not need "
            "it; for deformable conv, rotated boxes or the fast COCO evaluator install upstream "
            "detectron2: pip install 'git+https://github.com/facebookresearch/detectron2.git'"
        )


def _patch():
    for name, alias in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, alias)
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
    if not HAS_COMPILED_OPS and "detectron2._C" not in sys.modules:
        placeholder = _MissingCompiledOps("detectron2._C")
        placeholder.__file__ = None
        sys.modules["detectron2._C"] = placeholder
        import detectron2

        detectron2._C = placeholder


def describe():
    """One line naming the stack's versions and whether detectron2's compiled ops are present."""
    import detectron2
    import torch
    import torchvision

    ops = "with compiled ops (_C)" if HAS_COMPILED_OPS else "pure Python (no _C; see common/d2compat.py)"
    return (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"detectron2 {detectron2.__version__} {ops}, numpy {np.__version__}, CUDA available: "
        f"{torch.cuda.is_available()}"
    )


_patch()
