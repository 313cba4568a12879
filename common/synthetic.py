"""Synthetic data sets in the exact on-disk layouts of ImageNet, Pascal VOC 2007/2012 and COCO 2017.

They let the whole suite run where no real data set can be downloaded (tests, the demo, a laptop
smoke test). Each class is a distinct shape x colour x texture, drawn at several scales on a
cluttered background, so the tasks are learnable and the metrics meaningful. Objects never
overlap, so each polygon is exactly the visible mask. Output is a pure function of (seed, size).
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

from common.constants import VOC_CLASSES
from common.errors import ConfigError
from common.io import temporary_sibling
from common.records import check_record

# COCO category ids (COCO's own numbering) that the synthetic COCO images contain; the json still
# lists all 80 categories so that detectron2's builtin metadata applies unchanged.
COCO_USED_IDS = (1, 2, 3, 5, 7, 16, 17, 18, 44, 62)
IMAGENET_NUM_CLASSES = 10
MARKER = ".synthetic.json"


@dataclass(frozen=True)
class Size:
    imagenet_train_per_class: int
    imagenet_val_per_class: int
    imagenet_side: int
    voc2007_trainval: int
    voc2007_test: int
    voc2012_trainval: int
    coco_train: int
    coco_val: int


SIZES = {
    "tiny": Size(8, 4, 96, 40, 40, 20, 32, 24),
    "small": Size(40, 10, 128, 120, 100, 60, 100, 50),
}


def _unit_polygon(shape):
    """Vertices of a shape inside the unit square, as (x, y) pairs."""

    def ngon(n, phase=0.0, radius=0.5):
        return [
            (0.5 + radius * math.cos(phase + 2 * math.pi * k / n), 0.5 + radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)
        ]

    if shape == "circle":
        return ngon(24)
    if shape == "square":
        return [(0, 0), (1, 0), (1, 1), (0, 1)]
    if shape == "triangle":
        return [(0.5, 0), (1, 1), (0, 1)]
    if shape == "diamond":
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    if shape == "hexagon":
        return ngon(6)
    if shape == "cross":
        a, b = 0.33, 0.67
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "star":
        return [
            (
                0.5 + (0.5 if k % 2 == 0 else 0.2) * math.cos(-math.pi / 2 + math.pi * k / 5),
                0.5 + (0.5 if k % 2 == 0 else 0.2) * math.sin(-math.pi / 2 + math.pi * k / 5),
            )
            for k in range(10)
        ]
    if shape == "lshape":
        return [(0, 0), (0.4, 0), (0.4, 0.6), (1, 0.6), (1, 1), (0, 1)]
    if shape == "chevron":
        return [(0, 0), (0.5, 0.4), (1, 0), (1, 0.6), (0.5, 1), (0, 0.6)]
    if shape == "trapezoid":
        return [(0.25, 0), (0.75, 0), (1, 1), (0, 1)]
    raise ValueError(shape)


SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "cross", "star", "lshape", "chevron", "trapezoid")
COLOURS = (
    (220, 40, 40),
    (40, 170, 60),
    (40, 80, 220),
    (240, 200, 30),
    (200, 60, 200),
    (30, 200, 210),
    (250, 130, 20),
    (140, 80, 30),
    (250, 250, 250),
    (20, 20, 20),
)
TEXTURES = ("solid", "stripes", "checker", "dots")


def appearance(class_index):
    """(shape, colour, texture) of a class; distinct for the first 40 classes."""
    return (
        SHAPES[class_index % 10],
        COLOURS[(class_index + 3 * (class_index // 10)) % 10],
        TEXTURES[(class_index // 10) % 4],
    )


def _texture(colour, texture, w, h, rng):
    base = np.empty((h, w, 3), np.float32)
    base[:] = colour
    yy, xx = np.mgrid[0:h, 0:w]
    period = max(4, min(w, h) // 4)
    if texture == "stripes":
        pattern = ((yy // max(2, period // 2)) % 2).astype(bool)
    elif texture == "checker":
        pattern = (((yy // period) + (xx // period)) % 2).astype(bool)
    elif texture == "dots":
        pattern = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < (period / 3) ** 2
    else:
        pattern = np.zeros((h, w), bool)
    base[pattern] = base[pattern] * 0.35 + 255 * 0.15
    base += rng.normal(0, 6, base.shape)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def _background(w, h, rng):
    """A low-saturation gradient with random clutter: blobs and lines that are no class's shape."""
    start, end = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    img = (start * (1 - t) + end * t) * np.ones((h, 1, 1))
    img += rng.normal(0, 10, img.shape)
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 9))):
        grey = tuple(int(v) for v in rng.uniform(70, 180) + rng.uniform(-15, 15, 3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            draw.line([(x0, y0), (rng.uniform(0, w), rng.uniform(0, h))], fill=grey, width=int(rng.integers(1, 4)))
        else:
            r = rng.uniform(3, min(w, h) / 6)
            draw.ellipse([x0 - r, y0 - r / 2, x0 + r, y0 + r / 2], fill=grey)
    return canvas


def _draw_object(canvas, class_index, box, rng):
    """Draws a class's object filling box (x0, y0, w, h); returns its polygon as a flat list."""
    return _draw_shape(canvas, *appearance(class_index), box, rng)


def _draw_shape(canvas, shape, colour, texture, box, rng):
    return _draw_polygon(canvas, _unit_polygon(shape), colour, texture, box, rng)


def _draw_polygon(canvas, unit_polygon, colour, texture, box, rng):
    x0, y0, w, h = box
    polygon = [(x0 + u * (w - 1), y0 + v * (h - 1)) for u, v in unit_polygon]
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    patch = _texture(colour, texture, canvas.size[0], canvas.size[1], rng)
    canvas.paste(patch, (0, 0), mask)
    return [round(c, 2) for xy in polygon for c in xy]


def _place_boxes(rng, w, h, n, min_side, max_side):
    """Up to n non-overlapping boxes (x0, y0, bw, bh) with sides spread log-uniformly in [min, max]."""
    boxes = []
    for _ in range(n * 20):
        if len(boxes) == n:
            break
        side = math.exp(rng.uniform(math.log(min_side), math.log(max_side)))
        aspect = rng.uniform(0.75, 1.33)
        bw, bh = int(max(8, side * aspect)), int(max(8, side / aspect))
        if bw >= w - 2 or bh >= h - 2:
            continue
        x0, y0 = int(rng.integers(1, w - bw)), int(rng.integers(1, h - bh))
        if all(
            x0 + bw + 2 <= bx or bx + bbw + 2 <= x0 or y0 + bh + 2 <= by or by + bbh + 2 <= y0
            for bx, by, bbw, bbh in boxes
        ):
            boxes.append((x0, y0, bw, bh))
    return boxes


def _scene(rng, class_cycle):
    """A detection image with 2-4 objects from small (<32 px) to large; classes come from class_cycle."""
    w, h = int(rng.integers(176, 240)), int(rng.integers(160, 208))
    canvas = _background(w, h, rng)
    objects = []
    for box in _place_boxes(rng, w, h, int(rng.integers(2, 5)), 12, min(w, h) * 0.7):
        cls = next(class_cycle)
        objects.append({"class": cls, "box": box, "polygon": _draw_object(canvas, cls, box, rng)})
    return canvas, objects


def _balanced_cycle(rng, num_classes):
    """Endless class indices, each block of num_classes a fresh permutation: every class appears."""
    while True:
        yield from rng.permutation(num_classes).tolist()


def _save_jpeg(image, path):
    image.save(path, format="JPEG", quality=90)


def write_imagenet(root, size, rng):
    """ImageFolder layout: root/{train,val}/<wnid>/<wnid>_<k>.JPEG, one centred object per image."""
    for split, per_class in (("train", size.imagenet_train_per_class), ("val", size.imagenet_val_per_class)):
        for cls in range(IMAGENET_NUM_CLASSES):
            wnid = f"n{90000000 + cls:08d}"
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for k in range(per_class):
                side = size.imagenet_side
                canvas = _background(side, side, rng)
                obj = int(rng.uniform(0.45, 0.85) * side)
                x0, y0 = (int(rng.integers(0, side - obj)) for _ in range(2))
                _draw_object(canvas, cls, (x0, y0, obj, obj), rng)
                _save_jpeg(canvas, folder / f"{wnid}_{k}.JPEG")


def _deformed(unit_polygon, rng):
    """The polygon turned by up to 20 degrees, stretched by 0.75-1.25 along each axis and each vertex
    moved by about 4% of the side: an outline of its own for every image of a shape."""
    angle = rng.uniform(-0.35, 0.35)
    stretch = rng.uniform(0.75, 1.25, 2)
    cos, sin = math.cos(angle), math.sin(angle)
    deformed = []
    for u, v in unit_polygon:
        u, v = (u - 0.5) * stretch[0], (v - 0.5) * stretch[1]
        deformed.append((0.5 + u * cos - v * sin + rng.normal(0, 0.04), 0.5 + u * sin + v * cos + rng.normal(0, 0.04)))
    return deformed


def write_shapes(root, train_per_class, val_per_class, side, rng, coloured=False):
    """ImageFolder root/{train,val}/<shape>/<k>.JPEG: one shape per image, deformed per image
    (_deformed), so that its outline tells images apart and it is shape.

    Plain: a white shape on the same grey ground in every image. Coloured: each image draws its own
    ground colour, object colour (set off from the ground in luminance, so that the outline stays
    visible) and 2-4 strokes and blobs of clutter in further colours, smaller than the object and no
    class's shape. Colour then tells the images apart too and survives weak views, the shortcut of
    real photos that colour jitter and grayscale exist to defeat (benchmarks.md, "The learning check").
    """
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for shape in SHAPES:
            folder = root / split / shape
            folder.mkdir(parents=True)
            for k in range(per_class):
                canvas, colour = (_coloured_ground if coloured else _grey_ground)(side, rng)
                obj = int(rng.uniform(0.5, 0.85) * side)
                x0, y0 = (int(rng.integers(0, side - obj)) for _ in range(2))
                outline = _deformed(_unit_polygon(shape), rng)
                _draw_polygon(canvas, outline, colour, "solid", (x0, y0, obj, obj), rng)
                _save_jpeg(canvas, folder / f"{shape}_{k}.JPEG")


def _grey_ground(side, rng):
    """The plain variant's ground (grey 128 with a little noise) and its white object colour."""
    grey = np.full((side, side, 3), 128.0) + rng.normal(0, 6, (side, side, 3))
    return Image.fromarray(grey.clip(0, 255).astype(np.uint8)), (250, 250, 250)


def _luminance(rgb):
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _coloured_ground(side, rng):
    """The coloured variant's ground (an image's own colour, noise and clutter) and object colour."""
    ground = rng.uniform(0, 255, 3)
    image = ground + rng.normal(0, 6, (side, side, 3))
    canvas = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 5))):
        fill = tuple(int(v) for v in rng.uniform(0, 255, 3))
        x0, y0 = rng.uniform(0, side, 2)
        if rng.random() < 0.5:
            end = (rng.uniform(0, side), rng.uniform(0, side))
            draw.line([(x0, y0), end], fill=fill, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(2, side / 10)
            draw.ellipse([x0 - r, y0 - r / 2, x0 + r, y0 + r / 2], fill=fill)
    while True:
        colour = rng.uniform(0, 255, 3)
        if abs(_luminance(colour) - _luminance(ground)) >= 60:
            return canvas, tuple(int(v) for v in colour)


def _voc_xml(image_id, width, height, objects):
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC"
    ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(ann, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(ann, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(ann, "object")
        ET.SubElement(node, "name").text = VOC_CLASSES[obj["class"]]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(int(obj["difficult"]))
        x0, y0, w, h = obj["box"]
        bnd = ET.SubElement(node, "bndbox")
        # VOC boxes are 1-based and inclusive.
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x0 + w), ("ymax", y0 + h)):
            ET.SubElement(bnd, tag).text = str(value)
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode")


def write_voc(root, year, splits, rng):
    """A VOCdevkit year folder: JPEGImages, Annotations with difficult flags, ImageSets/Main lists."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    cycle = _balanced_cycle(rng, len(VOC_CLASSES))
    split_ids, presence = {}, {}
    counter = 0
    for split, count in splits.items():
        split_ids[split] = []
        for _ in range(count):
            counter += 1
            image_id = f"{counter:06d}" if year == 2007 else f"{year}_{counter:06d}"
            canvas, objects = _scene(rng, cycle)
            for obj in objects:
                # VOC marks some hard (mostly small) objects difficult.
                obj["difficult"] = obj["box"][2] * obj["box"][3] < 600 and rng.random() < 0.5
            _save_jpeg(canvas, root / "JPEGImages" / f"{image_id}.jpg")
            (root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, *canvas.size, objects))
            split_ids[split].append(image_id)
            labels = np.full(len(VOC_CLASSES), -1)
            for obj in objects:
                labels[obj["class"]] = max(labels[obj["class"]], 0 if obj["difficult"] else 1)
            presence[image_id] = labels
    if "train" in split_ids and "val" in split_ids:
        split_ids["trainval"] = split_ids["train"] + split_ids["val"]
    main = root / "ImageSets" / "Main"
    for split, ids in split_ids.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c, name in enumerate(VOC_CLASSES):
            (main / f"{name}_{split}.txt").write_text("".join(f"{i} {presence[i][c]:2d}\n" for i in ids))


def _coco_categories():
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [
        {"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "")}
        for c in COCO_CATEGORIES
        if c["isthing"]
    ]


def write_coco(root, split_counts, rng):
    """COCO 2017 layout: {train,val}2017/*.jpg and annotations/instances_*2017.json with polygons."""
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True)
    categories = _coco_categories()
    cycle = _balanced_cycle(rng, len(COCO_USED_IDS))
    image_id = ann_id = 0
    for split, count in split_counts.items():
        (root / f"{split}2017").mkdir()
        images, annotations = [], []
        for _ in range(count):
            image_id += 1
            canvas, objects = _scene(rng, cycle)
            w, h = canvas.size
            file_name = f"{image_id:012d}.jpg"
            _save_jpeg(canvas, root / f"{split}2017" / file_name)
            images.append(
                {"id": image_id, "file_name": file_name, "width": w, "height": h, "license": 0, "date_captured": ""}
            )
            for obj in objects:
                ann_id += 1
                rle = mask_utils.frPyObjects([obj["polygon"]], h, w)
                xs, ys = obj["polygon"][0::2], obj["polygon"][1::2]
                # As in COCO, the box is the polygon's extent and the area its rasterised mask's.
                x, y, bw, bh = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": COCO_USED_IDS[obj["class"]],
                        "segmentation": [obj["polygon"]],
                        "area": float(mask_utils.area(rle).sum()),
                        "bbox": [round(v, 2) for v in (x, y, bw, bh)],
                        "iscrowd": 0,
                    }
                )
        doc = {
            "info": {"description": "CLSA suite synthetic COCO-format set", "version": "1.0"},
            "licenses": [{"id": 0, "name": "synthetic", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))


def generate(out, seed=0, size="tiny"):
    """Writes DIR/{imagenet,VOC2007,VOC2012,coco}; returns the list of data-set folders.

    A data set already generated with the same (seed, size) is kept as is; one generated with other
    parameters, or any folder not made by this tool, is never overwritten: that is an error.
    Each data set is written to a temporary sibling and renamed into place, so an interrupted run
    leaves no half-written data set behind.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    if not 0 <= seed < 2**63:  # numpy's seed range; checked before anything is written
        raise ConfigError(f"seed {seed} is out of range; use a seed from 0 to 2**63 - 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; choose a folder for --out")
    spec = SIZES[size]
    params = {"seed": seed, "size": size, "format_version": 1}
    writers = {
        "imagenet": lambda root, rng: write_imagenet(root, spec, rng),
        "VOC2007": lambda root, rng: write_voc(
            root,
            2007,
            {
                "train": spec.voc2007_trainval // 2,
                "val": spec.voc2007_trainval - spec.voc2007_trainval // 2,
                "test": spec.voc2007_test,
            },
            rng,
        ),
        "VOC2012": lambda root, rng: write_voc(
            root,
            2012,
            {"train": spec.voc2012_trainval // 2, "val": spec.voc2012_trainval - spec.voc2012_trainval // 2},
            rng,
        ),
        "coco": lambda root, rng: write_coco(root, {"train": spec.coco_train, "val": spec.coco_val}, rng),
    }
    targets = {name: out / name for name in writers}
    # Every existing folder is checked before anything is written: a foreign one stops the run with --out unchanged.
    kept = {name for name, target in targets.items() if _generated_with(target, params)}
    out.mkdir(parents=True, exist_ok=True)
    for index, (name, write) in enumerate(writers.items()):
        if name not in kept:
            # One independent stream per data set: adding a data set never changes the others.
            _write_atomically(targets[name], params, write, np.random.default_rng([seed, index]))
    return list(targets.values())


SHAPES_VARIANTS = {"plain": "shapes", "coloured": "shapes_coloured"}  # variant -> folder


def generate_shapes(out, seed=0, train_per_class=100, val_per_class=20, side=64, variant="plain"):
    """Writes DIR/shapes (variant "plain") or DIR/shapes_coloured ("coloured"), the ImageFolder sets
    told apart by shape (write_shapes) that the learning check runs on; returns its folder. Kept,
    refused or written atomically as generate() does."""
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed {seed} is out of range; use a seed from 0 to 2**63 - 1")
    params = {
        "seed": seed,
        "variant": SHAPES_VARIANTS[variant],
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "side": side,
        "format_version": 3,
    }
    target = Path(out) / SHAPES_VARIANTS[variant]
    if not _generated_with(target, params):
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            target,
            params,
            lambda root, rng: write_shapes(root, train_per_class, val_per_class, side, rng, variant == "coloured"),
            np.random.default_rng([seed, 1000]),
        )
    return target


def _generated_with(target, params):
    """True if `target` was generated with `params`, False if it does not exist; RecordMismatchError
    for any other folder, which is not overwritten."""
    if not target.exists():
        return False
    marker = target / MARKER
    check_record(
        target,
        json.loads(marker.read_text()) if marker.is_file() else None,
        params,
        "remove it or choose another --out; it is not overwritten",
    )
    return True


def _write_atomically(target, params, write, rng):
    """`write(folder, rng)` into a temporary sibling of `target`, renamed onto it with a marker of `params`."""
    # Named for this process, so that the next writer removes what a killed one (kill -9) left.
    with temporary_sibling(target, folder=True) as staging:
        write(staging / "data", rng)
        (staging / "data" / MARKER).write_text(json.dumps(params))
        os.replace(staging / "data", target)
