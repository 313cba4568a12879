"""Frozen-backbone features for the VOC07 protocols, cached on disk.

Each image is resized to 256 (shorter side) and then to 224 x 224, with no crop; VISSL's VOC07 config
centre-crops instead, which can cut objects near the border out of a multi-label image. Normalisation
is ImageNet's. The cache holds the raw pooled features; the SVM protocol L2-normalises them with
`l2_normalise` (f / (||f|| + 1e-5), Goyal et al. 2019), while the paper's linear classifier sees them
as the backbone's fc layer would.

The layers ("res5", "res5_2x2") are common/trunk.py's.
"""

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from common.constants import IMAGENET_MEAN, IMAGENET_STD
from common.datasets import UNREADABLE_IMAGE
from common.errors import DatasetError
from common.io import atomic_path
from common.progress import progress_bar
from common.trunk import LAYERS, build_trunk

# Part of every cache key: bump it when the transform or the pooling changes.
FEATURE_VERSION = 2


def default_cache_dir():
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clsa-suite" / "features"


class ImageList(torch.utils.data.Dataset):
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(256, antialias=True),
            v2.Resize((224, 224), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        """(image tensor, "") or, for a file PIL cannot read, (zeros, the reason): `extract` raises in
        the main process, naming the file, rather than a DataLoader worker's traceback."""
        try:
            with Image.open(self.paths[index]) as image:
                return self.transform(image.convert("RGB")), ""
        except UNREADABLE_IMAGE as error:
            return torch.zeros(3, 224, 224), f"{type(error).__name__}: {error}"


def l2_normalise(features):
    return (features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-5)).astype(np.float32)


@torch.no_grad()
def extract(trunk, paths, batch_size=64, num_workers=2, desc="features"):
    """Float32 features (images x dim) of `paths`; on the GPU when there is one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trunk = trunk.to(device)
    loader = torch.utils.data.DataLoader(
        ImageList(paths), batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    chunks = []
    for batch, errors in progress_bar(loader, desc=desc, unit="batch"):
        bad = next((i for i, error in enumerate(errors) if error), None)
        if bad is not None:
            raise DatasetError(
                f"{paths[len(chunks) * batch_size + bad]} cannot be read ({errors[bad]}); "
                "replace the file, or remove its id from the ImageSets/Main lists"
            )
        chunks.append(trunk(batch.to(device, non_blocking=True)).float().cpu().numpy())
    return np.concatenate(chunks).astype(np.float32)


def cache_path(cache_dir, weights_sha256, split, layer, paths):
    """Cache file keyed by checkpoint sha256, split and layer, and by a hash of the images' paths, sizes
    and modification times: two data roots with the same split name, or images replaced in place,
    never share an entry."""
    stats = (os.stat(p) for p in paths)
    images = hashlib.sha256(
        "\n".join(f"{Path(p).resolve()} {s.st_size} {s.st_mtime_ns}" for p, s in zip(paths, stats)).encode()
    ).hexdigest()[:12]
    return Path(cache_dir) / f"{weights_sha256}_{split}-{images}_{layer}_v{FEATURE_VERSION}.npy"


def cached_features(backbone, weights_sha256, split, paths, layer="res5", cache_dir=None, **extract_args):
    """Features of `paths` under `backbone` (the checkpoint with sha256 `weights_sha256`), read from the
    cache when present, else extracted and cached."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; choose one of {sorted(LAYERS)}")
    path = cache_path(cache_dir or default_cache_dir(), weights_sha256, split, layer, paths)
    if path.is_file():
        try:
            return np.load(path)  # allow_pickle=False: an object array is refused, never unpickled
        except (ValueError, OSError, EOFError) as error:  # cut short, or not ours: extracted again
            warnings.warn(f"{path}: unreadable feature cache entry ({error}); extracting again", stacklevel=2)
    features = extract(build_trunk(backbone, layer), paths, desc=f"{split} {layer}", **extract_args)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, features)
    return features
