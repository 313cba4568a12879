"""The reference pipelines build the reference scripts' views with the reference's RandAugment."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.images import photo_like
from benchmarks.reference_pipelines import (
    RANDAUGMENT_OPS,
    RandAugmentMC,
    clsa_reference_pipeline,
    moco_v2_pipeline,
)


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(photo_like(375, 500, np.random.default_rng(0), 12.0))


def _seed(seed):
    torch.manual_seed(seed)
    random.seed(seed)


@pytest.mark.parametrize(
    "pipeline, sizes",
    [
        (clsa_reference_pipeline("single"), [224, 224, 96, 224, 96]),
        (clsa_reference_pipeline("multi"), [224, 224, 192, 160, 128, 96, 224, 192, 160, 128, 96]),
        (moco_v2_pipeline(), [224, 224]),
    ],
    ids=["single", "multi", "mocov2"],
)
def test_pipelines_make_the_reference_scripts_views_as_normalised_float_tensors(image, pipeline, sizes):
    _seed(0)
    views = pipeline(image)
    assert [tuple(view.shape) for view in views] == [(3, size, size) for size in sizes]
    for view in views:
        assert view.dtype == torch.float32
        # ImageNet's mean/std map [0, 1] to [-2.12, 2.64]: a view still in [0, 1] has no negatives.
        assert -2.2 < view.min() < 0 and view.max() < 2.7


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown CLSA variant"):
        clsa_reference_pipeline("double")


@pytest.mark.parametrize(
    "names, at_1, at_9",
    [
        (("Brightness", "Color", "Contrast", "Sharpness"), 0.14, 0.86),
        (("ShearX", "ShearY", "TranslateX", "TranslateY"), 0.03, 0.27),
        (("Rotate",), 3, 27),
        (("Posterize",), 4, 7),
        (("Solarize",), 231, 26),
    ],
)
def test_levels_1_and_9_map_to_the_reference_magnitudes(names, at_1, at_9):
    for name in names:
        magnitude = RANDAUGMENT_OPS[name].magnitude
        assert magnitude(1) == pytest.approx(at_1) and magnitude(9) == pytest.approx(at_9), name


@pytest.mark.parametrize("name", sorted(RANDAUGMENT_OPS))
def test_each_op_at_the_top_level_keeps_an_rgb_image_of_its_size(image, name):
    op = RANDAUGMENT_OPS[name]
    out = op.apply(image, op.magnitude(9) if op.magnitude else None)
    assert out.mode == "RGB" and out.size == image.size


def test_geometric_ops_fill_with_black(image):
    random.seed(0)
    shifted = np.asarray(RANDAUGMENT_OPS["TranslateX"].apply(image, 0.27))
    black_columns = (shifted == 0).all(axis=(0, 2))
    assert black_columns.sum() == int(0.27 * image.size[0])


def test_randaugment_changes_the_image_and_keeps_its_size(image):
    random.seed(0)
    out = RandAugmentMC(n=5, m=10)(image)
    assert out.size == image.size
    assert not np.array_equal(np.asarray(out), np.asarray(image))


@pytest.mark.parametrize("variant", ["single", "multi"])
def test_same_seeds_give_the_same_views(image, variant):
    pipeline = clsa_reference_pipeline(variant)
    _seed(3)
    first = pipeline(image)
    _seed(3)
    second = pipeline(image)
    _seed(4)
    other = pipeline(image)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[-1], other[-1])
