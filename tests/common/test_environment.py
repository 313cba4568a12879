import importlib.machinery

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
