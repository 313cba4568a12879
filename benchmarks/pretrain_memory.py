"""Activation memory of one pretraining step, counted without a GPU.

Runs the forward pass of CLSA on the meta device (shapes only, no data) and adds up the bytes of
every tensor autograd saves for the backward pass (parameters excluded): the activations a GPU must
hold at the peak of the step. The GPU's peak is that plus the weights, gradients and SGD momentum
(~0.6 GiB for ResNet-50), the key encoder's transient forward, cuDNN workspaces and allocator slack:
measure it on the GPU with benchmarks/pretrain_speed.py ("peak GiB").

bf16 is counted with bf16 weights and inputs, because autocast has no meta backend. Under autocast
the convolutions save bf16 tensors too, so the count stands for the bf16 autocast step. The losses
run in fp32 either way.

    python benchmarks/pretrain_memory.py [--batch-size 256] [--arch resnet50]
"""

import argparse
import contextlib

import torch

from pretrain.builder import CLSA
from pretrain.config import preset_cfg
from pretrain.views.spec import ViewSet


def saved_activation_gib(arch, preset, batch_size, dtype, checkpoint_strong):
    with torch.device("meta"):
        model = CLSA(arch, checkpoint_strong=checkpoint_strong).to(dtype)
        images = ViewSet.from_cfg(preset_cfg(preset)).views.map(
            lambda view: torch.empty(batch_size, 3, view.size, view.size, dtype=dtype).contiguous(
                memory_format=torch.channels_last
            )
        )
    saved = {}

    def pack(tensor):
        # A view (the bank's transpose, saved once per query) is counted as its base, once.
        base = tensor if tensor._base is None else tensor._base
        if not isinstance(base, torch.nn.Parameter):
            saved[id(base)] = (base, base.numel() * base.element_size())  # holding it keeps the id unique
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(*images)
    return sum(size for _, size in saved.values()) / 2**30


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=256, help="images per process")
    parser.add_argument("--presets", nargs="+", default=["clsa_single", "clsa_multi", "mocov2"])
    args = parser.parse_args()
    # The model turns autocast off around its losses; on the meta device that has nothing to turn off.
    real_autocast = torch.autocast
    torch.autocast = lambda device_type, **kwargs: (
        contextlib.nullcontext() if device_type == "meta" else real_autocast(device_type, **kwargs)
    )
    print(f"{args.arch}, batch {args.batch_size}: GiB saved for the backward pass")
    print(f"{'preset':<12} {'fp32':>7} {'bf16':>7} {'bf16 + CHECKPOINT_STRONG':>25}")
    for preset in args.presets:
        fp32 = saved_activation_gib(args.arch, preset, args.batch_size, torch.float32, False)
        bf16 = saved_activation_gib(args.arch, preset, args.batch_size, torch.bfloat16, False)
        checkpointed = saved_activation_gib(args.arch, preset, args.batch_size, torch.bfloat16, True)
        print(f"{preset:<12} {fp32:>7.2f} {bf16:>7.2f} {checkpointed:>25.2f}")


if __name__ == "__main__":
    main()
