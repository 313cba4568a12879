"""Pascal VOC2007 image-level labels, read from ImageSets/Main/<class>_<split>.txt (1 / -1 / 0)."""

from pathlib import Path

import numpy as np

from common.constants import VOC_CLASSES
from common.datasets import detectron2_datasets_root
from common.errors import DatasetError
from transfer.features import cached_features
from transfer.results import load_weights

LAYOUT = "VOC2007/{JPEGImages/<id>.jpg, ImageSets/Main/<class>_{trainval,test}.txt}"


def voc2007_root(data_root=None):
    """--data, else $DETECTRON2_DATASETS/VOC2007 (detectron2's convention), checked for its layout."""
    root = Path(data_root) if data_root is not None else detectron2_datasets_root() / "VOC2007"
    for sub in ("JPEGImages", "ImageSets/Main"):
        if not (root / sub).is_dir():
            raise DatasetError(
                f"{root / sub} not found: expected the layout {LAYOUT}; pass --data "
                "or set DETECTRON2_DATASETS to the folder that holds VOC2007"
            )
    return root


def read_split(root, split):
    """(image paths, int8 labels of shape images x 20 in {1, -1, 0}) of a VOC2007 split."""
    root = Path(root)
    ids, columns = None, []
    for name in VOC_CLASSES:
        path = root / "ImageSets" / "Main" / f"{name}_{split}.txt"
        if not path.is_file():
            raise DatasetError(f"{path} not found: expected the layout {LAYOUT}")
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if any(len(row) != 2 or row[1] not in ("1", "-1", "0") for row in rows):
            raise DatasetError(f"{path}: every line must be '<image id> <1|-1|0>'")
        file_ids = [row[0] for row in rows]
        if ids is None:
            ids = file_ids
        elif file_ids != ids:
            raise DatasetError(f"{path} lists other images than {VOC_CLASSES[0]}_{split}.txt")
        columns.append([int(row[1]) for row in rows])
    paths = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]} not found ({len(missing)} images of {split} missing)")
    return paths, np.array(columns, np.int8).T


def load_voc07(args, layer, **extract_args):
    """What both VOC07 feature protocols start from: the checkpoint (read once), the VOC2007 folder,
    the trainval/test (paths, labels) and their frozen features (through the cache)."""
    backbone, weights = load_weights(args.weights)
    root = voc2007_root(args.data_root)
    splits = {name: read_split(root, name) for name in ("trainval", "test")}
    features = {
        name: cached_features(
            backbone, weights["sha256"], name, paths, layer, args.cache_dir, num_workers=args.workers, **extract_args
        )
        for name, (paths, _) in splits.items()
    }
    return weights, root, splits, features
