import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from common import backbone as backbone_module
from common.backbone import load_backbone
from transfer import features, voc07_linear


def test_feature_cache_is_reused_and_the_model_built_once(tmp_path, synthetic_root, monkeypatch):
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    backbone = load_backbone(weights)
    paths = sorted((synthetic_root / "VOC2007" / "JPEGImages").glob("*.jpg"))[:3]
    calls = []

    def fake_trunk(backbone, layer):
        calls.append((backbone, layer))
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # 3-d "features": mean colour

    monkeypatch.setattr(features, "build_trunk", fake_trunk)
    first = features.cached_features(backbone, "w0", "trainval", paths, "res5", tmp_path / "cache", num_workers=0)
    second = features.cached_features(backbone, "w0", "trainval", paths, "res5", tmp_path / "cache", num_workers=0)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    assert first.shape == (3, 3)
    # Another layer or split is another cache entry.
    features.cached_features(backbone, "w0", "test", paths, "res5", tmp_path / "cache", num_workers=0)
    assert len(calls) == 2


def test_feature_cache_misses_when_an_image_is_replaced_in_place(tmp_path, synthetic_root, monkeypatch):
    """A flat grey image written over a VOC JPEG gives other features, not the cached ones."""
    from PIL import Image

    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    backbone = load_backbone(weights)
    paths = []
    for source in sorted((synthetic_root / "VOC2007" / "JPEGImages").glob("*.jpg"))[:2]:
        paths.append(tmp_path / source.name)
        paths[-1].write_bytes(source.read_bytes())
    monkeypatch.setattr(
        features, "build_trunk", lambda backbone, layer: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    )
    before = features.cached_features(backbone, "w0", "test", paths, "res5", tmp_path / "cache", num_workers=0)
    Image.new("RGB", (64, 48), (128, 128, 128)).save(paths[0])
    after = features.cached_features(backbone, "w0", "test", paths, "res5", tmp_path / "cache", num_workers=0)
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.allclose(after[0], before[0])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_a_cache_entry_cut_short_is_extracted_again_with_a_warning(tmp_path, synthetic_root, monkeypatch):
    paths = sorted((synthetic_root / "VOC2007" / "JPEGImages").glob("*.jpg"))[:2]
    monkeypatch.setattr(
        features, "build_trunk", lambda backbone, layer: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    )
    first = features.cached_features(None, "w0", "test", paths, "res5", tmp_path, num_workers=0)
    (entry,) = tmp_path.glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable feature cache entry"):
        again = features.cached_features(None, "w0", "test", paths, "res5", tmp_path, num_workers=0)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(np.load(entry), first)


def test_l2_normalise_matches_goyal_formula():
    f = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(features.l2_normalise(f), [[3 / (5 + 1e-5), 4 / (5 + 1e-5)], [0, 0]], rtol=1e-6)


def test_normalisation_and_voc_classes_come_from_one_place():
    from common import constants, synthetic
    from pretrain.views import spec
    from transfer import voc

    assert features.IMAGENET_MEAN is spec.IMAGENET_MEAN is constants.IMAGENET_MEAN
    assert features.IMAGENET_STD is spec.IMAGENET_STD is constants.IMAGENET_STD
    assert voc.VOC_CLASSES is synthetic.VOC_CLASSES is constants.VOC_CLASSES and len(constants.VOC_CLASSES) == 20


def test_a_transfer_run_reads_the_checkpoint_once(tmp_path, synthetic_root, monkeypatch):
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    reads = []
    read = backbone_module._load  # every load_backbone, wherever imported, reads the file through it
    monkeypatch.setattr(backbone_module, "_load", lambda path: reads.append(path) or read(path))
    args = voc07_linear.parse_args(
        [
            "--weights",
            str(weights),
            "--output-dir",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--epochs",
            "1",
            "--workers",
            "0",
        ]
    )
    voc07_linear.main(args)
    assert reads == [weights]


def test_a_truncated_image_is_named_in_one_line(tmp_path, synthetic_root):
    import pytest

    from common.errors import DatasetError

    sources = sorted((synthetic_root / "VOC2007" / "JPEGImages").glob("*.jpg"))[:3]
    paths = [tmp_path / source.name for source in sources]
    for source, path in zip(sources, paths):
        path.write_bytes(source.read_bytes())
    paths[2].write_bytes(sources[2].read_bytes()[:300])
    trunk = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(DatasetError) as error:
        features.extract(trunk, paths, batch_size=2, num_workers=1)
    message = str(error.value)
    assert message.startswith(f"{paths[2]} cannot be read (OSError") and "\n" not in message
    assert features.extract(trunk, paths[:2], batch_size=2, num_workers=0).shape == (2, 3)
