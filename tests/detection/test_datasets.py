"""The VOC pre-check refuses, in one line naming the file, what detectron2's loader would fail on
after building the model, and counts the boxes that reach outside their image."""

import logging

import pytest
from detectron2.data.datasets.pascal_voc import CLASS_NAMES

from common.errors import DatasetError
from detection.datasets import check_voc_annotations

GOOD = "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>"


def voc(tmp_path, *objects, size="<size><width>50</width><height>40</height></size>"):
    """A VOC year folder of one image, 000001, holding `objects`; returns the annotation's path."""
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("000001\n")
    (tmp_path / "Annotations").mkdir()
    path = tmp_path / "Annotations" / "000001.xml"
    path.write_text(f"<annotation>{size}{''.join(objects)}</annotation>")
    return path


def box(*coordinates, name="dog"):
    sides = "".join(f"<{side}>{value}</{side}>" for side, value in zip(("xmin", "ymin", "xmax", "ymax"), coordinates))
    return f"<object><name>{name}</name><bndbox>{sides}</bndbox></object>"


@pytest.mark.parametrize(
    "objects, size, message",
    [
        ((box(1, 2, 30, 40, name="unicorn"),), None, "object 1 is of class 'unicorn', not one of the 20 classes"),
        ((GOOD, "<object><name>cat</name></object>"), None, r"object 2 \(cat\): no <bndbox>"),
        ((box(1, 2, 30),), None, r"<bndbox> needs 4 numbers xmin, ymin, xmax, ymax, got \['1', '2', '30', None\]"),
        ((box(1, 2, "nan", 40),), None, r"<bndbox> \[1.0, 2.0, nan, 40.0\] has a coordinate that is not a finite"),
        ((box(1, 2, "inf", 40),), None, "has a coordinate that is not a finite number"),
        ((box(30, 2, 1, 40),), None, "has xmax < xmin or ymax < ymin"),
        ((GOOD,), "", "no <size> with an integer <width> and <height>"),
    ],
)
def test_a_bad_annotation_is_one_line_naming_the_file(tmp_path, objects, size, message):
    path = voc(tmp_path, *objects, **({} if size is None else {"size": size}))
    with pytest.raises(DatasetError, match=message) as error:
        check_voc_annotations(str(tmp_path), "train", CLASS_NAMES)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    assert str(error.value).endswith("or remove 000001 from " + f"{tmp_path}/ImageSets/Main/train.txt")


def test_boxes_outside_the_image_are_counted_in_one_warning(tmp_path, caplog):
    voc(tmp_path, GOOD, box(0, 2, 30, 40), box(1, 2, 1e9, 40), box(1, 1, 50, 40))
    with caplog.at_level(logging.WARNING):
        assert check_voc_annotations(str(tmp_path), "train", CLASS_NAMES) == 2
    (warning,) = caplog.records
    assert "2 boxes reach outside their image and are clipped" in warning.getMessage()
    assert "000001.xml, object 2: [0.0, 2.0, 30.0, 40.0] in a 50x40 image" in warning.getMessage()
