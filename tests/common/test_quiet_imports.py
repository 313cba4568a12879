"""The first import of fvcore.nn (through detectron2) prints no torch.jit.script FutureWarning in the
entry points, and other FutureWarnings still show."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FIRST_IMPORTS = {
    "converter": "from converters.to_d2 import d2_resnet50_shapes; d2_resnet50_shapes()",
    "detection entry script": "import tools.train_net",
}


@pytest.mark.parametrize("code", FIRST_IMPORTS.values(), ids=FIRST_IMPORTS.keys())
def test_importing_detectron2_through_an_entry_module_prints_no_jit_warning(code, tmp_path):
    check = "import sys, warnings; assert 'fvcore.nn' in sys.modules; warnings.warn('still shown', FutureWarning)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(REPO)

    result = subprocess.run(
        [sys.executable, "-c", f"{code}; {check}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert "torch.jit.script" not in result.stderr
    assert "FutureWarning: still shown" in result.stderr
