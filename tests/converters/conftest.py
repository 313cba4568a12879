"""Session-wide checkpoints on disk (a ResNet-50 pretraining checkpoint is ~240 MB: write it once)."""

import pytest
import torch

from tests.converters.converter_inputs import moco_checkpoint, pretrain_checkpoint, random_resnet


@pytest.fixture(scope="session")
def query_encoder():
    return random_resnet(seed=0)


@pytest.fixture(scope="session")
def key_encoder():
    return random_resnet(seed=1)


@pytest.fixture(scope="session")
def pretrain_ckpt(tmp_path_factory, query_encoder, key_encoder):
    """A pretraining checkpoint on disk whose encoders are `query_encoder` and `key_encoder`."""
    path = tmp_path_factory.mktemp("pretrain") / "checkpoint_0003.pth"
    torch.save(pretrain_checkpoint(query_encoder, key_encoder), path)
    return path


@pytest.fixture(scope="session")
def moco_ckpt(tmp_path_factory, query_encoder, key_encoder):
    path = tmp_path_factory.mktemp("moco") / "moco_v2_200ep_pretrain.pth.tar"
    torch.save(moco_checkpoint(query_encoder, key_encoder), path)
    return path


@pytest.fixture(scope="session")
def d2_pkl(pretrain_ckpt, tmp_path_factory):
    """`python converters/to_d2.py` applied to the pretraining checkpoint (query encoder)."""
    from converters import to_d2

    out = tmp_path_factory.mktemp("d2") / "clsa_r50.pkl"
    assert to_d2.main([str(pretrain_ckpt), str(out)]) == 0
    return out
