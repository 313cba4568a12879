"""Writes the pretrained backbone as a torchvision ResNet state dict: `python converters/to_torchvision.py CKPT [OUT]`.

`getattr(torchvision.models, arch)().load_state_dict(sd, strict=False)` then reports only fc.* missing.
A narrow backbone or one with the CIFAR stem (printed as arch resnet18_w32, resnet18_cifar, ...)
loads into `common.trunk.resnet(arch)` instead, torchvision's network at that width and with that stem.
"""

import sys

import torch

from common.io import atomic_torch_save
from converters.cli import run


def write_torchvision(backbone, path, out):
    atomic_torch_save(backbone.state_dict, out)


def same_state_dict(a, b):
    """Whether two files hold equal tensors under equal names (torch.save's bytes differ run to run)."""
    try:
        first, second = (torch.load(path, map_location="cpu", weights_only=True) for path in (a, b))
    except Exception:  # torch.load raises many types: an unreadable file is not the same conversion
        return False
    return (
        isinstance(second, dict)
        and first.keys() == second.keys()
        and all(torch.is_tensor(second[k]) and torch.equal(first[k], second[k]) for k in first)
    )


def main(argv=None):
    return run(argv, __doc__.splitlines()[0], ".torchvision.pth", write_torchvision, same_state_dict)


if __name__ == "__main__":
    sys.exit(main())
