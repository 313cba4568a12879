"""The split files that identify a data set, for common.io.fingerprint_files.

Every stage records their fingerprint in its results.json, and tools/run_suite.py in each stage's
stamp, so results computed on other data (another $DETECTRON2_DATASETS, edited split lists) are
never taken as done.
"""

import os
from pathlib import Path

# detectron2's builtin layout under $DETECTRON2_DATASETS: the VOC image lists and the COCO annotations.
VOC2007_SPLITS = ("ImageSets/Main/*.txt",)
DETECTRON2_SPLITS = ("VOC2007/ImageSets/Main/*.txt", "VOC2012/ImageSets/Main/*.txt", "coco/annotations/*.json")
# An ImageNet root (train/ and val/ ImageFolders): the class folders and how many images each holds.
IMAGENET_SPLITS = ("train/*", "val/*")


def detectron2_datasets_root():
    """$DETECTRON2_DATASETS as detectron2 reads it (default ./datasets), absolute."""
    return Path(os.getenv("DETECTRON2_DATASETS", "datasets")).resolve()
