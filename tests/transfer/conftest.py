import pytest
import torch
import torchvision


@pytest.fixture(scope="module")
def r18_weights(tmp_path_factory):
    """A randomly initialised torchvision ResNet-18 state dict, saved as a plain checkpoint."""
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path
