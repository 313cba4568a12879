import subprocess
import sys
import textwrap

import numpy as np
import pytest

import common.d2compat as d2compat


def test_stack_imports_through_compat_module():
    from detectron2.engine import DefaultTrainer  # noqa: F401
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator  # noqa: F401
    from detectron2.modeling import build_model  # noqa: F401
    import fvcore, pycocotools, sklearn, torchvision  # noqa: F401,E401

    # The aliases detectron2 v0.6 uses (numpy 2 has np.bool again, as its own bool type).
    assert np.array([0, 2]).astype(np.bool).tolist() == [False, True]
    assert np.int is int and np.float is float and np.str is str
    from PIL import Image

    assert Image.LINEAR == Image.BILINEAR
    assert "detectron2" in d2compat.describe()


@pytest.mark.skipif(d2compat.HAS_COMPILED_OPS, reason="this detectron2 has its compiled ops")
def test_reports_missing_compiled_ops_and_names_the_fix():
    from detectron2 import _C

    with pytest.raises(RuntimeError, match="built without its C\\+\\+ ops.*git\\+https"):
        _C.deform_conv_forward


def test_detects_a_real_compiled_module_and_leaves_it_alone(tmp_path):
    # A stand-in _C on detectron2's package path plays the part of an upstream build.
    (tmp_path / "_C.py").write_text("MARK = 'real extension'\n")
    script = textwrap.dedent(f"""
        import detectron2
        detectron2.__path__.append({str(tmp_path)!r})
        import common.d2compat as c
        from detectron2 import _C
        print(c.HAS_COMPILED_OPS, _C.MARK)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "True real extension"
