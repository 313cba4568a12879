"""An ImageFolder scan that a folder symlink loop, a FIFO or a decompression bomb cannot fool.

torchvision's ImageFolder follows every folder symlink: `class/up -> ..` makes one class hold every
other class's images, and a loop grows the data set until the path is too long. It lists a FIFO or a
device named `*.JPEG` as an image, and a worker that opens it waits forever. Here

- a folder symlink whose target lies inside the data set's root (a loop, or a second copy of a class),
  holds the link itself (a loop) or was already visited is not followed: it is named in a warning
  and skipped, so that every image is listed once under its own class. Links to other folders
  outside the root (data on other storage) are followed.
- a name with an image extension that is not a regular file (a FIFO, a socket, a device, a dangling
  link) is skipped, and the skipped files are counted and named in a warning.

The order of the samples is torchvision's (classes sorted, then folders, then files), so indices, and
the views that derive from them, are the same as with torchvision's ImageFolder on a clean tree.

`check_pixel_limit` refuses an image with more pixels than PIL decodes, from its header: the batched
executor, which decodes with torchvision.io, applies it to have the per-image path's limit.
"""

import io
import logging
import os
from dataclasses import dataclass, field

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from common.errors import DatasetError

logger = logging.getLogger(__name__)

_SHOWN = 3  # files or links named in a warning; the rest are counted


@dataclass
class ScanReport:
    """What a scan left out: (link, target) of each folder symlink not followed, and each file with an
    image extension that is not a regular file."""

    links: list = field(default_factory=list)
    not_regular: list = field(default_factory=list)

    def warn(self, root):
        if self.links:
            shown = ", ".join(f"{link} -> {target}" for link, target in self.links[:_SHOWN])
            logger.warning(
                "%s: not following %d folder symlink(s) into the data set itself or to a folder already "
                "scanned (a loop, or a second copy of a class): %s",
                root,
                len(self.links),
                shown,
            )
        if self.not_regular:
            logger.warning(
                "%s: skipping %d name(s) with an image extension that are not regular files (FIFO, socket, "
                "device or dangling link): %s",
                root,
                len(self.not_regular),
                ", ".join(self.not_regular[:_SHOWN]),
            )


def image_folders(class_dir, root, report, visited=None):
    """(folder, sorted file names) of every folder under `class_dir`, ordered by folder path as
    torchvision's ImageFolder orders them, without the folder symlinks that lead back inside `root`, to
    a folder holding the link, or to a folder already in `visited` (a set of (st_dev, st_ino), shared
    across the classes of a root), which are added to `report.links`. The file names are of anything
    that is not a folder, for the caller to tell apart (`is_regular_image`)."""
    root = os.path.realpath(root)
    visited = set() if visited is None else visited
    folders, pending = [], [class_dir]
    while pending:
        folder = pending.pop()
        stat = os.stat(folder)
        visited.add((stat.st_dev, stat.st_ino))
        names = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.is_dir():
                    names.append(entry.name)
                elif entry.is_symlink():
                    target, stat = os.path.realpath(entry.path), entry.stat()
                    inside = _within(target, root)
                    if inside or _within(os.path.realpath(folder), target) or (stat.st_dev, stat.st_ino) in visited:
                        report.links.append((entry.path, target))
                    else:
                        pending.append(entry.path)
                else:
                    pending.append(entry.path)
        folders.append((folder, sorted(names)))
    return sorted(folders)


def _within(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def is_regular_image(path, report, is_valid_file=None):
    """Whether `path` is an image the scan lists: a valid name (`is_valid_file`, by default an image
    extension) of a regular file. A valid name of anything else goes to `report.not_regular`."""
    valid = is_valid_file(path) if is_valid_file else path.lower().endswith(IMG_EXTENSIONS)
    if valid and not os.path.isfile(path):
        report.not_regular.append(path)
        return False
    return valid


class ScannedImageFolder(ImageFolder):
    """torchvision's ImageFolder whose scan skips, and names in a warning, folder symlink loops and
    files that are not regular files (see the module's docstring)."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        if is_valid_file is None:
            extensions = tuple(extensions or IMG_EXTENSIONS)

            def is_valid_file(path):
                return path.lower().endswith(extensions)

        report, visited, samples, empty = ScanReport(), set(), [], []
        for name in sorted(class_to_idx):
            count = len(samples)
            for folder, names in image_folders(os.path.join(directory, name), directory, report, visited):
                paths = (os.path.join(folder, file) for file in names)
                label = class_to_idx[name]
                samples += [(path, label) for path in paths if is_regular_image(path, report, is_valid_file)]
            if len(samples) == count:
                empty.append(name)
        report.warn(directory)
        if empty and not allow_empty:
            raise DatasetError(
                f"Image root {os.fspath(directory)!r}: no image in the class folder(s) {', '.join(empty[:_SHOWN])}"
                f"{' ...' if len(empty) > _SHOWN else ''}; remove them or add their images"
            )
        return samples


def check_pixel_limit(data):
    """Raises PIL's DecompressionBombError if the image in `data` (bytes, or a uint8 tensor of them)
    has more pixels than the per-image path's PIL decodes (twice Image.MAX_IMAGE_PIXELS), reading
    only its header; PIL warns above MAX_IMAGE_PIXELS itself, as on that path."""
    raw = data.numpy().tobytes() if hasattr(data, "numpy") else bytes(data)
    try:
        with Image.open(io.BytesIO(raw)):  # Image.open checks the size in the header against the limit
            pass
    except Image.DecompressionBombError:
        raise
    except Exception:  # noqa: BLE001 - a header PIL cannot read: the decoder that follows judges the file
        pass
