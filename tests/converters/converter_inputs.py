"""Checkpoints of each kind the converters accept, built from torchvision models with random weights."""

import copy

import torch
import torchvision
from torch import nn


def random_resnet(arch="resnet50", seed=0):
    """A torchvision ResNet in eval mode whose BN layers carry random affine weights and statistics."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)
    return model.eval()


def with_mlp_head(model):
    """A copy of the encoder as pretraining builds it: fc replaced by MoCo v2's MLP projection head."""
    model = copy.deepcopy(model)
    dim = model.fc.in_features
    model.fc = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 128))
    return model


def pretrain_checkpoint(query, key):
    """The dict pretraining writes: both encoders (with heads), the queue, optimizer and progress."""
    model = {f"encoder_q.{k}": v for k, v in with_mlp_head(query).state_dict().items()}
    model.update({f"encoder_k.{k}": v for k, v in with_mlp_head(key).state_dict().items()})
    model.update(queue=torch.randn(128, 32), queue_ptr=torch.zeros(1, dtype=torch.long))
    optimizer = torch.optim.SGD(query.parameters(), lr=0.03, momentum=0.9)
    return {
        "kind": "clsa-suite/pretrain",
        "model": model,
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "iteration": 120,
        "config": "MODEL:\n  ARCH: resnet50\n",
    }


def moco_checkpoint(query, key):
    """The layout of the MoCo / CLSA reference code: DDP's "module." prefix under "state_dict"."""
    model = pretrain_checkpoint(query, key)["model"]
    return {
        "state_dict": {f"module.{k}": v for k, v in model.items()},
        "epoch": 200,
        "arch": "resnet50",
        "optimizer": {},
    }


def backbone_tensors(model):
    """What a converter should keep of a torchvision ResNet: all but fc.* and num_batches_tracked."""
    return {
        k: v for k, v in model.state_dict().items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


def zero_state_dict(arch, **kwargs):
    """torchvision `arch`'s names and shapes, each a zero broadcast from one element (tiny on disk)."""
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(**kwargs)
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in model.state_dict().items()}
