"""Writes the pretrained backbone as a torchvision ResNet state dict: `python converters/to_torchvision.py CKPT [OUT]`.

`getattr(torchvision.models, arch)().load_state_dict(sd, strict=False)` then reports only fc.* missing.
"""
import sys

from common.io import atomic_torch_save
from converters.cli import run


def write_torchvision(backbone, path, out):
    atomic_torch_save(backbone.state_dict, out)


def main(argv=None):
    return run(argv, __doc__.splitlines()[0], ".torchvision.pth", write_torchvision)


if __name__ == "__main__":
    sys.exit(main())
