"""Reads a ResNet backbone out of any checkpoint the suite meets and says what it found.

Three kinds are recognised, by their structure rather than their file name:
- this suite's pretraining checkpoints: ``{"kind": "clsa-suite/pretrain", "model": {"encoder_q.*",
  "encoder_k.*", "queue", "queue_ptr"}, ...}``;
- the MoCo / CLSA reference checkpoints: ``{"state_dict": {"module.encoder_q.*", ...}, ...}``;
- a torchvision ResNet state dict, bare or under "state_dict" / "model", "module." prefix or not.

Every checkpoint is untrusted input, so it is read with ``torch.load(..., weights_only=True)``.
"""

import pickletools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.models.resnet import Bottleneck

from common.checkpoint_files import read_checkpoint
from common.constants import PRETRAIN_CHECKPOINT_KIND
from common.errors import CheckpointError
from common.trunk import BLOCKS, CIFAR_STEM, NARROW_WIDTHS, TORCHVISION_WIDTH, resnet, width_suffix

ENCODERS = {"query": "encoder_q.", "key": "encoder_k."}

# (blocks in layer1..layer4, bottleneck blocks?) -> torchvision constructor name
_ARCHS = {(layers, block is Bottleneck): name for name, (block, layers) in BLOCKS.items()}
_LAYER_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")


@dataclass
class Backbone:
    state_dict: dict  # torchvision ResNet names, float32, without fc.* and num_batches_tracked
    source_kind: str
    arch: str
    dropped: list = field(default_factory=list)  # checkpoint names of the tensors left out

    def dropped_summary(self):
        """The dropped names grouped, e.g. 'encoder_k.* (320), *.num_batches_tracked (53), queue (1)'."""
        groups = Counter(_dropped_group(name) for name in self.dropped)
        return ", ".join(f"{group} ({count})" for group, count in groups.most_common()) or "none"


def _dropped_group(name):
    if name.endswith("num_batches_tracked"):
        return "*.num_batches_tracked"
    for prefix in ("module.encoder_q.", "module.encoder_k.", "encoder_q.", "encoder_k."):
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return f"{prefix}fc.*" if rest.startswith("fc.") else f"{prefix}*"
    return "fc.*" if name.removeprefix("module.").startswith("fc.") else name


def load_backbone(path, encoder="query"):
    """The backbone of `path` as a torchvision ResNet state dict; raises CheckpointError."""
    path = Path(path)
    if encoder not in ENCODERS:
        raise CheckpointError(path, f"unknown encoder {encoder!r}; pick one of {sorted(ENCODERS)}")
    state, prefix, kind = _find_resnet_weights(path, _load(path), encoder)
    kept, dropped = {}, []
    for name, value in state.items():
        inner = name[len(prefix) :] if name.startswith(prefix) else None
        if inner is None or inner.startswith("fc.") or inner.endswith("num_batches_tracked"):
            dropped.append(name)
        elif not torch.is_tensor(value) or not value.is_floating_point():
            raise CheckpointError(path, f"{name} is not a floating-point tensor ({type(value).__name__})")
        else:
            kept[inner] = value.to(torch.float32)
    arch = _infer_arch(path, kept)
    _check_against_torchvision(path, kept, arch)
    return Backbone(state_dict=kept, source_kind=kind, arch=arch, dropped=dropped)


def _load(path):
    # A pickle (not torch's zip format) is torch's legacy format or a detectron2 .pkl; the latter is
    # recognised by its keys before torch.load refuses its numpy arrays with a confusing message.
    if path.is_file() and _pickle_mentions(path, {"__author__", "blobs"}):
        raise CheckpointError(
            path,
            "is a detectron2 .pkl (already converted, or a detectron2 model zoo "
            "file); pass the pretraining .pth checkpoint instead",
        )
    return read_checkpoint(path)


def _pickle_mentions(path, words):
    """Whether the (first) pickle in `path` carries any of `words` as a string; nothing is executed."""
    with open(path, "rb") as f:
        if not f.read(1).startswith(b"\x80"):
            return False
        f.seek(0)
        try:
            for _, arg, _ in pickletools.genops(f):
                if isinstance(arg, (str, bytes)) and (arg.decode("latin1") if isinstance(arg, bytes) else arg) in words:
                    return True
        except Exception:  # truncated, or not a pickle after all: judge by what was read
            pass
    return False


def _find_resnet_weights(path, obj, encoder):
    """(state dict, prefix of the wanted ResNet's names in it, kind of checkpoint)."""
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a dict of weights")
    if "__author__" in obj:
        raise CheckpointError(path, "is a detectron2 checkpoint (already converted); pass the pretraining .pth")
    if obj.get("kind") == PRETRAIN_CHECKPOINT_KIND:
        return _two_encoder_weights(path, obj.get("model"), encoder, "clsa-suite pretraining checkpoint")
    for outer in ("state_dict", "model"):
        inner = obj.get(outer)
        if isinstance(inner, dict) and any(".encoder_q." in f".{k}" for k in inner):
            return _two_encoder_weights(path, inner, encoder, "MoCo/CLSA reference checkpoint")
    state = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), obj)
    prefix = "module." if "module.conv1.weight" in state else ""
    if f"{prefix}conv1.weight" not in state:
        raise CheckpointError(path, _no_resnet_reason(state))
    if encoder != "query":
        raise CheckpointError(path, "is a single torchvision ResNet; --encoder key needs a pretraining checkpoint")
    return state, prefix, "torchvision state dict"


def _two_encoder_weights(path, state, encoder, kind):
    if not isinstance(state, dict):
        raise CheckpointError(path, f"{kind} without a model state dict")
    prefix = "module." if any(str(k).startswith("module.encoder_") for k in state) else ""
    wanted = prefix + ENCODERS[encoder]
    if not any(k.startswith(wanted) for k in state):
        raise CheckpointError(path, f"{kind} has no {wanted}* weights for --encoder {encoder}")
    return state, wanted, kind


def _no_resnet_reason(state):
    names = [str(k) for k in state]
    if any(n.split(".")[0] in ("stem", "res2", "backbone") for n in names):
        return "holds detectron2 model weights (stem/res2 names), not a pretraining checkpoint"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return (
        f"no ResNet weights found (keys: {shown or 'none'}); expected a clsa-suite pretraining "
        "checkpoint, a MoCo/CLSA checkpoint or a torchvision ResNet state dict"
    )


def _infer_arch(path, state):
    blocks = [0, 0, 0, 0]
    for name in state:
        match = _LAYER_BLOCK.match(name)
        if match:
            layer, block = int(match.group(1)), int(match.group(2))
            blocks[layer - 1] = max(blocks[layer - 1], block + 1)
    bottleneck = "layer1.0.conv3.weight" in state
    arch = _ARCHS.get((tuple(blocks), bottleneck))
    if arch is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise CheckpointError(path, f"not a torchvision ResNet-18/34/50/101/152: {kind} blocks per layer {blocks}")
    conv1 = state.get("conv1.weight")
    if conv1 is None:  # the shape check names it missing
        return arch
    # Any other width is read as torchvision's, so that the shape check names its mis-shaped tensors.
    width = conv1.shape[0] if conv1.shape[0] in NARROW_WIDTHS else TORCHVISION_WIDTH
    return arch + width_suffix(width) + (CIFAR_STEM if tuple(conv1.shape[-2:]) == (3, 3) else "")


def expected_shapes(arch):
    """Names and shapes of torchvision `arch` without fc.* and num_batches_tracked."""
    with torch.device("meta"):  # shapes only: no memory, no weight init cost
        model = resnet(arch)
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


def key_mismatch(actual, expected):
    """One-line description of missing, unexpected and mis-shaped keys, or "" when they agree."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    misshaped = [
        f"{k} {tuple(actual[k].shape)} != {expected[k]}"
        for k in sorted(set(actual) & set(expected))
        if tuple(actual[k].shape) != tuple(expected[k])
    ]
    parts = [
        f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    return "; ".join(parts)


def _check_against_torchvision(path, state, arch):
    mismatch = key_mismatch(state, expected_shapes(arch))
    if mismatch:
        raise CheckpointError(path, f"does not match torchvision {arch}: {mismatch}")
