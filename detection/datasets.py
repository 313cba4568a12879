"""Checks that the data sets a config names exist on disk and parse, before any model is built."""

import logging
import math
import os
import xml.etree.ElementTree as ET

import detectron2.data.datasets  # noqa: F401  (registers the builtin names under DETECTRON2_DATASETS)
from detectron2.data import DatasetCatalog, MetadataCatalog

from common.datasets import detectron2_datasets_root
from common.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)
_BOX = ("xmin", "ymin", "xmax", "ymax")


def expected_paths(name):
    """The folders/files a registered data set reads (VOC: its year folder; COCO: json + images)."""
    if name not in DatasetCatalog.list():
        raise ConfigError(
            f"data set {name!r} is not registered; detectron2's builtin names include "
            "voc_2007_trainval, voc_2012_trainval, voc_2007_test, coco_2017_train, coco_2017_val"
        )
    meta = MetadataCatalog.get(name)
    if hasattr(meta, "dirname"):
        return [meta.dirname]
    return [p for p in (getattr(meta, "json_file", None), getattr(meta, "image_root", None)) if p]


def check_datasets(names):
    """Raises DatasetError for a missing folder or a VOC annotation that is not XML."""
    root = detectron2_datasets_root()
    for name in names:
        for path in expected_paths(name):
            if not os.path.exists(path):
                raise DatasetError(
                    f"data set {name!r} expects {os.path.abspath(path)}, which does not exist. Set "
                    f"DETECTRON2_DATASETS (now {str(root)!r}) to the folder holding VOC2007/, VOC2012/ and "
                    "coco/, or generate the synthetic ones: python tools/make_synthetic_data.py --output-dir DIR"
                )
        meta = MetadataCatalog.get(name)
        if hasattr(meta, "dirname") and hasattr(meta, "split"):
            check_voc_annotations(meta.dirname, meta.split, meta.thing_classes)


def check_voc_annotations(dirname, split, class_names):
    """Reads Annotations/<id>.xml of every image of ImageSets/Main/<split>.txt as detectron2's VOC
    loader will (which names neither the file nor the fix when one is wrong), and raises DatasetError,
    naming the file, for what it cannot use: unparsable XML, no image size, a class not among
    `class_names`, a missing <bndbox> or coordinate, a coordinate that is not a finite number, an
    inverted box. A box reaching outside its image is clipped by detectron2's data loader;
    those are counted in one warning. Returns that count."""
    with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
        ids = f.read().split()
    outside, first_outside = 0, None
    for image_id in ids:
        path = os.path.join(dirname, "Annotations", f"{image_id}.xml")
        fix = f"correct the file, or remove {image_id} from {dirname}/ImageSets/Main/{split}.txt"
        try:
            tree = ET.parse(path)
        except (ET.ParseError, OSError) as error:
            raise DatasetError(f"{path}: unreadable VOC annotation ({type(error).__name__}: {error}); {fix}") from None
        try:
            width, height = (int(tree.findtext(f"size/{side}")) for side in ("width", "height"))
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: no <size> with an integer <width> and <height>; {fix}") from None
        for number, obj in enumerate(tree.iter("object"), 1):
            name = obj.findtext("name")
            if name not in class_names:
                raise DatasetError(
                    f"{path}: object {number} is of class {name!r}, not one of the {len(class_names)} classes "
                    f"({', '.join(class_names)}); {fix}"
                )
            box = _box(obj.find("bndbox"))
            if isinstance(box, str):
                raise DatasetError(f"{path}: object {number} ({name}): {box}; {fix}")
            # VOC counts pixels from 1: (1, 1, width, height) covers the image (detectron2 subtracts 1).
            if not (1 <= box[0] and 1 <= box[1] and box[2] <= width and box[3] <= height):
                outside += 1
                first_outside = first_outside or f"{path}, object {number}: {box} in a {width}x{height} image"
    if outside:
        logger.warning(
            "%s: %d boxes reach outside their image and are clipped to it in training (first: %s)",
            dirname,
            outside,
            first_outside,
        )
    return outside


def _box(bndbox):
    """The 4 coordinates of a <bndbox>, or why it cannot be used."""
    if bndbox is None:
        return "no <bndbox>"
    try:
        box = [float(bndbox.findtext(side)) for side in _BOX]
    except (TypeError, ValueError):
        return f"<bndbox> needs 4 numbers {', '.join(_BOX)}, got {[bndbox.findtext(side) for side in _BOX]}"
    if not all(math.isfinite(v) for v in box):
        return f"<bndbox> {box} has a coordinate that is not a finite number"
    if not (box[0] <= box[2] and box[1] <= box[3]):
        return f"<bndbox> {box} has xmax < xmin or ymax < ymin"
    return box
