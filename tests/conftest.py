"""Shared fixtures. The synthetic data sets are generated once per test session.

detectron2 reads DETECTRON2_DATASETS when its builtin data sets are first imported, so the variable
is set here, before any test module imports detectron2.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_DATASETS = Path(tempfile.mkdtemp(prefix="clsa-tests-datasets-"))
os.environ["DETECTRON2_DATASETS"] = str(_DATASETS)
atexit.register(shutil.rmtree, _DATASETS, ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic_root():
    """The tiny synthetic data sets (imagenet/, VOC2007/, VOC2012/, coco/), seed 0."""
    from common.synthetic import generate

    generate(_DATASETS, seed=0, size="tiny")
    return _DATASETS


def pytest_collection_modifyitems(config, items):
    """The learning check takes about 16 minutes: it runs only when asked for by name
    (`make learning-check`, or -m learning_check), so that `make test` stays within CI's time."""
    if "learning_check" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the ~16-minute learning check; run it with make learning-check")
    for item in items:
        if "learning_check" in item.keywords:
            item.add_marker(skip)
