"""What the suite runs on: the versions of its stack and whether detectron2 has its compiled ops.

The detectron2 this suite's set-up builds (``tools/build_detectron2.py``) has no C++ extension: its
``detectron2._C`` is a Python placeholder whose ops raise an error naming the fix. An upstream build
has the real extension module. Code that can use a compiled op when present asks
``DETECTRON2_HAS_COMPILED_OPS`` (the fast COCO evaluator, say).
"""

import importlib.machinery
import importlib.util


def _has_compiled_ops():
    spec = importlib.util.find_spec("detectron2._C")
    return (
        spec is not None
        and spec.origin is not None
        and spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    )


DETECTRON2_HAS_COMPILED_OPS = _has_compiled_ops()


def describe():
    """One line naming the stack's versions and whether detectron2's compiled ops are present."""
    import detectron2
    import numpy as np
    import torch
    import torchvision

    ops = "with compiled ops (_C)" if DETECTRON2_HAS_COMPILED_OPS else "pure Python (no _C)"
    return (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"detectron2 {detectron2.__version__} {ops}, numpy {np.__version__}, CUDA available: "
        f"{torch.cuda.is_available()}"
    )
