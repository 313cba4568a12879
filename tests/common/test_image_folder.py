"""The ImageFolder scan lists each image once under its own class, whatever links and special files the
tree holds, and the header check refuses the images PIL's decoder refuses."""

import logging
import os

import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from common.datasets import check_image_root
from common.image_folder import ScannedImageFolder, check_pixel_limit


def image(path, size=(4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


@pytest.fixture
def tree(tmp_path):
    """root/{a,b}/ with nested folders, and class c a link to a folder outside the root."""
    root = tmp_path / "root"
    for name in ("a/1.JPEG", "a/2.png", "a/sub/3.JPEG", "a/sub/deeper/4.JPEG", "b/5.JPEG", "b/z/6.JPEG"):
        image(root / name)
    image(tmp_path / "elsewhere" / "7.JPEG")
    (root / "c").symlink_to(tmp_path / "elsewhere")
    return root


def test_a_clean_tree_is_listed_as_torchvision_lists_it(tree):
    assert ScannedImageFolder(tree).samples == ImageFolder(tree).samples
    assert len(ImageFolder(tree).samples) == 7


@pytest.mark.parametrize("link, target", [("a/sub/up", ".."), ("a/b", "../b"), ("c/back", "../root"), ("c/self", ".")])
def test_a_folder_link_into_the_data_set_or_itself_is_not_followed_and_named(tree, caplog, link, target):
    clean = ScannedImageFolder(tree).samples
    (tree / link).symlink_to(target)
    with caplog.at_level(logging.WARNING):
        assert ScannedImageFolder(tree).samples == clean
    assert "not following 1 folder symlink(s)" in caplog.text and str(tree / link) in caplog.text


def test_files_that_are_not_regular_are_skipped_counted_and_named(tree, caplog):
    clean = ScannedImageFolder(tree).samples
    os.mkfifo(tree / "a" / "0.JPEG")  # sorted first: opening it would block for good
    (tree / "b" / "gone.JPEG").symlink_to(tree / "missing.JPEG")
    with caplog.at_level(logging.WARNING):
        assert ScannedImageFolder(tree).samples == clean
        check_image_root(tree)
    assert "skipping 2 name(s) with an image extension that are not regular files" in caplog.text
    assert str(tree / "a" / "0.JPEG") in caplog.text


def test_the_root_check_does_not_loop_or_open_a_fifo(tmp_path):
    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "0.JPEG")
    (tmp_path / "a" / "up").symlink_to("..")
    image(tmp_path / "b" / "1.JPEG")
    check_image_root(tmp_path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side, refused", [(14, False), (15, True)])
def test_the_header_check_refuses_what_pil_refuses_to_decode(tmp_path, monkeypatch, side, refused):
    """With a limit of 100 pixels, PIL decodes up to 200 (it only warns between 100 and 200)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "x.png"
    Image.new("RGB", (side, side)).save(path)
    try:
        with Image.open(path) as decoded:
            decoded.load()
        pil_refuses = False
    except Image.DecompressionBombError:
        pil_refuses = True
    try:
        check_pixel_limit(path.read_bytes())
        header_refuses = False
    except Image.DecompressionBombError:
        header_refuses = True
    assert pil_refuses == header_refuses == refused
