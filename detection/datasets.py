"""Checks that the data sets a config names exist on disk and parse, before any model is built."""

import os
import xml.etree.ElementTree as ET

import detectron2.data.datasets  # noqa: F401  (registers the builtin names under DETECTRON2_DATASETS)
from detectron2.data import DatasetCatalog, MetadataCatalog

from common.datasets import detectron2_datasets_root
from common.errors import ConfigError, DatasetError


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
                    "coco/, or generate the synthetic ones: python tools/make_synthetic_data.py --out DIR"
                )
        meta = MetadataCatalog.get(name)
        if hasattr(meta, "dirname") and hasattr(meta, "split"):
            check_voc_annotations(meta.dirname, meta.split)


def check_voc_annotations(dirname, split):
    """Parses Annotations/<id>.xml of every image of ImageSets/Main/<split>.txt, as detectron2's VOC
    loader will (which names neither the file nor the fix when one is damaged)."""
    with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
        ids = f.read().split()
    for image_id in ids:
        path = os.path.join(dirname, "Annotations", f"{image_id}.xml")
        try:
            ET.parse(path)
        except (ET.ParseError, OSError) as error:
            raise DatasetError(
                f"{path}: unreadable VOC annotation ({type(error).__name__}: {error}); restore the "
                f"file, or remove {image_id} from {dirname}/ImageSets/Main/{split}.txt"
            ) from None
