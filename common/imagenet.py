"""An ImageNet root (train/ and val/ in ImageFolder layout) as the evaluations read it, and the
test-time view of ImageNet evaluations (Resize 256, CenterCrop 224)."""

import os

import torch
from torchvision.transforms import v2

from common.constants import IMAGENET_MEAN, IMAGENET_STD
from common.datasets import check_image_root
from common.errors import DatasetError
from common.image_folder import ScannedImageFolder

_NORMALIZE = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def center_crop_transform(crop=224):
    """Resize(256) + CenterCrop(224), or the same ratio at `crop`, then ImageNet's normalisation."""
    return v2.Compose(
        [v2.ToImage(), v2.Resize(round(crop * 256 / 224), antialias=True), v2.CenterCrop(crop), *_NORMALIZE]
    )


def check_imagenet_root(root):
    """DatasetError naming the folder unless root holds train/ and val/ ImageFolders with a readable image
    each: a cheap check to run before anything is written."""
    for split in ("train", "val"):
        path = os.path.join(root, split)
        if not os.path.isdir(path):
            raise DatasetError(f"{path} not found: --data must hold train/<class>/*.JPEG and val/<class>/*.JPEG")
        check_image_root(path, "--data")  # an empty or flat folder: one line naming it, not ImageFolder's traceback


def image_folders(root, train_transform=None, val_transform=None):
    """(train, val) ImageFolders of root/train and root/val; by default RandomResizedCrop(224) + flip to
    train and center_crop_transform() to test. DatasetError naming the folder if either is unusable."""
    train_tf = train_transform or v2.Compose(
        [v2.ToImage(), v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), *_NORMALIZE]
    )
    check_imagenet_root(root)
    folders = {
        split: ScannedImageFolder(os.path.join(root, split), tf)
        for split, tf in (("train", train_tf), ("val", val_transform or center_crop_transform()))
    }
    if folders["train"].classes != folders["val"].classes:
        raise DatasetError(f"{root}: train/ and val/ hold different class folders")
    return folders["train"], folders["val"]
