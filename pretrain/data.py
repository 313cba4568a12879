"""The pretraining data set: an ImageFolder (ImageNet train layout) that yields the views of each image.

A corrupt or unreadable image is skipped, not fatal: one bad file in 1.28M must not end a run of
days. It is logged once per file and process, counted in a counter shared by the DataLoader workers,
and replaced by the next readable image so that every batch keeps its size.
"""
import logging
import multiprocessing
import os

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

logger = logging.getLogger(__name__)

_LAYOUT = "root/<class>/<image>, e.g. imagenet/train/n01440764/n01440764_10026.JPEG"
# What PIL raises on a truncated, garbled or non-image file.
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def check_image_root(root):
    """Fail early, with the fix, if `root` is not an ImageFolder root holding at least one image."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f"Image root {root!r} does not exist; point DATA.ROOT at a folder laid out "
                                f"as {_LAYOUT}")
    if not os.path.isdir(root):
        raise ValueError(f"Image root {root!r} is a file, not a folder; expected {_LAYOUT}")
    class_dirs = sorted(entry.path for entry in os.scandir(root) if entry.is_dir())
    if not class_dirs:
        loose = any(name.lower().endswith(IMG_EXTENSIONS) for name in os.listdir(root))
        hint = " It holds images directly: move them into class sub-folders." if loose else ""
        raise ValueError(f"Image root {root!r} has no class folders; expected {_LAYOUT}.{hint}")
    for class_dir in class_dirs:
        for dirpath, _, filenames in os.walk(class_dir, followlinks=True):
            if any(name.lower().endswith(IMG_EXTENSIONS) for name in filenames):
                return
    raise ValueError(f"Image root {root!r} has {len(class_dirs)} class folders but no images "
                     f"({', '.join(IMG_EXTENSIONS)}) in them; expected {_LAYOUT}")


class PretrainImageFolder(ImageFolder):
    """ImageFolder whose items are (views, index): `transform(image)` (e.g. a MultiViewTransform's
    list of view tensors) and the index of the image actually used.

    `num_skipped` counts how many times an unreadable image was replaced by the next one, summed
    over this data set and its DataLoader workers (each epoch counts a bad file again).
    """

    def __init__(self, root, transform):
        check_image_root(root)
        super().__init__(root, transform=transform)
        # A lock-protected shared integer. Made in a spawn context because its lock then also pickles
        # into spawned/forkserver DataLoader workers, while forked workers simply inherit it.
        self._skipped = multiprocessing.get_context("spawn").Value("q", 0)
        self._warned = set()

    @property
    def num_skipped(self):
        return self._skipped.value

    def __getitem__(self, index):
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            path = self.samples[candidate][0]
            try:
                image = self.loader(path)
            except _UNREADABLE as error:
                self._skip(path, error)
                continue
            return self.transform(image), candidate
        raise RuntimeError(f"No image under {self.root!r} could be read; see the warnings above")

    def _skip(self, path, error):
        with self._skipped.get_lock():
            self._skipped.value += 1
        if path not in self._warned:
            self._warned.add(path)
            logger.warning("Skipping unreadable image %s (%s: %s); using the next image instead",
                           path, type(error).__name__, error)
