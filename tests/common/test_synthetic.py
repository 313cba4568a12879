import hashlib
import json
import math
import socket
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.errors import RecordMismatchError
from common.synthetic import COCO_USED_IDS, SHAPES, VOC_CLASSES, generate, generate_shapes


def _voc_objects(voc_root, image_id):
    root = ET.parse(voc_root / "Annotations" / f"{image_id}.xml").getroot()
    return [(o.find("name").text, int(o.find("difficult").text)) for o in root.findall("object")]


@pytest.mark.parametrize("year", [2007, 2012])
def test_voc_per_class_files_agree_with_xml(synthetic_root, year):
    voc = synthetic_root / f"VOC{year}"
    main = voc / "ImageSets" / "Main"
    splits = ["train", "val", "trainval"] + (["test"] if year == 2007 else [])
    ids = {s: (main / f"{s}.txt").read_text().split() for s in splits}
    assert ids["trainval"] == ids["train"] + ids["val"]
    difficult_seen = 0
    for split in splits:
        for cls in VOC_CLASSES:
            rows = [line.split() for line in (main / f"{cls}_{split}.txt").read_text().splitlines()]
            assert [r[0] for r in rows] == ids[split]
            for image_id, label in rows:
                flags = [d for name, d in _voc_objects(voc, image_id) if name == cls]
                expected = -1 if not flags else (1 if 0 in flags else 0)
                assert int(label) == expected, (split, cls, image_id)
                difficult_seen += label == "0"
    assert difficult_seen > 0, "some class-image pairs must be difficult-only"


def test_voc_loads_through_detectron2_builtin_names(synthetic_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name, year, split in [
        ("voc_2007_trainval", 2007, "trainval"),
        ("voc_2007_test", 2007, "test"),
        ("voc_2012_trainval", 2012, "trainval"),
    ]:
        dicts = DatasetCatalog.get(name)
        voc = synthetic_root / f"VOC{year}"
        ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert [d["image_id"] for d in dicts] == ids
        classes = MetadataCatalog.get(name).thing_classes
        for d in dicts[:5]:
            assert Image.open(d["file_name"]).size == (d["width"], d["height"])
            names = [classes[a["category_id"]] for a in d["annotations"]]
            assert sorted(names) == sorted(n for n, _ in _voc_objects(voc, d["image_id"]))
    test_classes = {a["category_id"] for d in DatasetCatalog.get("voc_2007_test") for a in d["annotations"]}
    assert test_classes == set(range(20)), "every VOC class must appear in the test split"


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_json_is_valid_and_polygons_match_their_masks(synthetic_root, split):
    from pycocotools.coco import COCO

    coco = COCO(str(synthetic_root / "coco" / "annotations" / f"instances_{split}2017.json"))
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(f"coco_2017_{split}")
    assert sorted(coco.getCatIds()) == sorted(meta.thing_dataset_id_to_contiguous_id)
    assert len(coco.getCatIds()) == 80
    areas = []
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.imgs[ann["image_id"]]
        poly = np.array(ann["segmentation"][0]).reshape(-1, 2)
        assert (poly >= 0).all() and (poly[:, 0] <= img["width"]).all() and (poly[:, 1] <= img["height"]).all()
        assert ann["category_id"] in COCO_USED_IDS and ann["iscrowd"] == 0
        # Independent raster: PIL's polygon fill against the stored (pycocotools) area.
        mask = Image.new("L", (img["width"], img["height"]))
        ImageDraw.Draw(mask).polygon([tuple(p) for p in poly], fill=1)
        pil_area = np.asarray(mask).sum()
        perimeter = np.linalg.norm(np.roll(poly, -1, 0) - poly, axis=1).sum()
        assert abs(pil_area - ann["area"]) <= perimeter, (ann["id"], pil_area, ann["area"])
        x, y, w, h = ann["bbox"]
        assert math.isclose(x, poly[:, 0].min(), abs_tol=0.01) and math.isclose(x + w, poly[:, 0].max(), abs_tol=0.02)
        areas.append(ann["area"])
    assert min(areas) < 32**2 < 96**2 < max(areas), "COCO small and large objects must both exist"


def test_coco_loads_through_detectron2_builtin_names(synthetic_root):
    from detectron2.data import DatasetCatalog

    for name, split in [("coco_2017_train", "train"), ("coco_2017_val", "val")]:
        doc = json.loads((synthetic_root / "coco" / "annotations" / f"instances_{split}2017.json").read_text())
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == len(doc["images"])
        assert sum(len(d["annotations"]) for d in dicts) == len(doc["annotations"])
        assert all(Path(d["file_name"]).is_file() for d in dicts)


def test_imagenet_is_an_image_folder(synthetic_root):
    from torchvision.datasets import ImageFolder

    train, val = ImageFolder(synthetic_root / "imagenet" / "train"), ImageFolder(synthetic_root / "imagenet" / "val")
    assert len(train.classes) == 10 and train.classes == val.classes
    assert len(train) == 80 and len(val) == 40


def _tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_by_seed(tmp_path, synthetic_root):
    generate(tmp_path / "same", seed=0)
    generate(tmp_path / "other", seed=1)
    for name in ("imagenet", "VOC2007", "coco"):
        assert _tree_digest(tmp_path / "same" / name) == _tree_digest(synthetic_root / name)
        assert _tree_digest(tmp_path / "other" / name) != _tree_digest(synthetic_root / name)


def test_never_overwrites_a_different_data_set(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "mine.txt").write_text("user data")
    with pytest.raises(RecordMismatchError, match="not overwritten"):
        generate(tmp_path, seed=0)
    assert (tmp_path / "coco" / "mine.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"], "nothing is written before the check"


def test_a_bad_seed_is_a_one_line_error_that_writes_nothing(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "tools/make_synthetic_data.py", "--out", str(tmp_path / "d"), "--seed", "-1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: seed -1 is out of range")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "d").exists()


def _colour_histogram_knn_accuracy(root):
    """Val accuracy of 5-NN on 4x4x4-bin colour histograms: how much colour alone tells the class."""
    from sklearn.neighbors import KNeighborsClassifier

    def histograms(split):
        rows, labels = [], []
        for label, folder in enumerate(sorted((root / split).iterdir())):
            for path in sorted(folder.iterdir()):
                pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3) // 64
                rows.append(np.bincount(pixels @ [16, 4, 1], minlength=64) / len(pixels))
                labels.append(label)
        return np.array(rows), np.array(labels)

    return KNeighborsClassifier(5).fit(*histograms("train")).score(*histograms("val"))


def test_shapes_variant_is_told_apart_by_shape_not_colour(tmp_path, synthetic_root):
    root = generate_shapes(tmp_path, seed=0, train_per_class=30, val_per_class=10, side=64)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(SHAPES)
    assert all(len(list((root / "val" / shape).iterdir())) == 10 for shape in SHAPES)
    assert Image.open(next((root / "val" / "star").iterdir())).size == (64, 64)
    # Chance is 10%; on the suite's imagenet set, where each class has its own colour, colour is enough.
    assert _colour_histogram_knn_accuracy(root) < 0.25
    assert _colour_histogram_knn_accuracy(synthetic_root / "imagenet") > 0.4
    assert generate_shapes(tmp_path, seed=0, train_per_class=30, val_per_class=10, side=64) == root  # kept
    with pytest.raises(RecordMismatchError, match="not overwritten"):
        generate_shapes(tmp_path, seed=1, train_per_class=30, val_per_class=10, side=64)


def test_the_coloured_shapes_variant_draws_each_images_colours_apart_from_its_class(tmp_path):
    plain = generate_shapes(tmp_path, seed=0, train_per_class=30, val_per_class=10, side=64)
    root = generate_shapes(tmp_path, seed=0, train_per_class=30, val_per_class=10, side=64, variant="coloured")
    assert root == tmp_path / "shapes_coloured" and sorted(p.name for p in (root / "train").iterdir()) == sorted(SHAPES)

    def ground_colours(folder):  # the median of each image's border: its ground
        rows = []
        for path in sorted(folder.glob("train/*/*.JPEG")):
            pixels = np.asarray(Image.open(path).convert("RGB")).astype(float)
            rows.append(np.median(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]), axis=0))
        return np.array(rows)

    assert ground_colours(plain).std(axis=0).max() < 5 < 50 < ground_colours(root).std(axis=0).min()
    assert _colour_histogram_knn_accuracy(root) < 0.25  # still told apart by shape only


def test_a_set_that_a_killed_writer_left_half_written_is_removed_by_the_next_writer(tmp_path):
    dead_pid = 2**22 + 1  # above Linux's pid_max: no live process has it
    leftover = tmp_path / f".shapes.{dead_pid}@{socket.gethostname()}.abc.tmp"
    (leftover / "data").mkdir(parents=True)
    generate_shapes(tmp_path, seed=0)
    assert not leftover.exists() and (tmp_path / "shapes" / "train").is_dir()
