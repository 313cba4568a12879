"""Where the data sets are, what identifies them, and the check that an image folder is usable.

Every stage records their fingerprint in its results.json, and tools/run_suite.py in each stage's
stamp, so results computed on other data (another $DETECTRON2_DATASETS, edited split lists) are
never taken as done.
"""

import os
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from common.errors import DatasetError
from common.image_folder import ScanReport, image_folders, is_regular_image

# detectron2's builtin layout under $DETECTRON2_DATASETS: the VOC image lists and the COCO annotations.
VOC2007_SPLITS = ("ImageSets/Main/*.txt",)
DETECTRON2_SPLITS = ("VOC2007/ImageSets/Main/*.txt", "VOC2012/ImageSets/Main/*.txt", "coco/annotations/*.json")
# An ImageNet root (train/ and val/ ImageFolders): the class folders and how many images each holds.
IMAGENET_SPLITS = ("train/*", "val/*")


def detectron2_datasets_root():
    """$DETECTRON2_DATASETS as detectron2 reads it (default ./datasets), absolute."""
    return Path(os.getenv("DETECTRON2_DATASETS", "datasets")).resolve()


_LAYOUT = "root/<class>/<image>, e.g. imagenet/train/n01440764/n01440764_10026.JPEG"
# What PIL (and, RuntimeError, torchvision.io) raise on a truncated, garbled or non-image file.
UNREADABLE_IMAGE = (OSError, SyntaxError, ValueError, RuntimeError, Image.DecompressionBombError)


def check_image_root(root, flag="DATA.ROOT"):
    """Raises DatasetError, naming `flag` (where the user set `root`) and the fix, unless `root` is an
    ImageFolder root holding at least one readable image. Images are decoded in scan order
    (common/image_folder.py's, which neither loops nor opens a FIFO) until one reads: one file in a
    healthy data set."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise DatasetError(f"Image root {root!r} does not exist; point {flag} at a folder laid out as {_LAYOUT}")
    if not os.path.isdir(root):
        raise DatasetError(f"Image root {root!r} is a file, not a folder; expected {_LAYOUT}")
    class_dirs = sorted(entry.path for entry in os.scandir(root) if entry.is_dir())
    if not class_dirs:
        loose = any(name.lower().endswith(IMG_EXTENSIONS) for name in os.listdir(root))
        hint = " It holds images directly: move them into class sub-folders." if loose else ""
        raise DatasetError(f"Image root {root!r} has no class folders; expected {_LAYOUT}.{hint}")
    unreadable, report, visited = [], ScanReport(), set()
    for class_dir in class_dirs:
        for dirpath, filenames in image_folders(class_dir, root, report, visited):
            for path in (os.path.join(dirpath, name) for name in filenames):
                if is_regular_image(path, report):
                    try:
                        with Image.open(path) as image:
                            image.load()
                        return
                    except UNREADABLE_IMAGE as error:
                        unreadable.append((path, error))
    if unreadable:
        path, error = unreadable[0]
        raise DatasetError(
            f"Image root {root!r}: none of its {len(unreadable)} images can be read (first: {path}, "
            f"{type(error).__name__}: {error}); replace the files or point {flag} elsewhere"
        )
    raise DatasetError(
        f"Image root {root!r} has {len(class_dirs)} class folders but no images "
        f"({', '.join(IMG_EXTENSIONS)}) in them; expected {_LAYOUT}"
    )
