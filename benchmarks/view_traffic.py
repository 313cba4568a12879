"""The batched views' device work per batch, counted on the meta device (no GPU needed).

For each preset at 256 and 32 images per GPU, the batched executor (pretrain.views.batched) makes one
batch's views of ImageNet-like images (281-500 x 333-500, uint8) on the meta device under a
TorchDispatchMode that counts:
- launches: device ops other than views and allocations (each is about one kernel launch on a GPU);
- bytes: the sum of every such op's operand and result sizes (the DRAM traffic if nothing is fused);
- H2D: copies from the host to the device.
Meta tensors have shapes but no data, so the counts are those of a GPU run without one, and the run
finishing shows the views need no device-to-host sync. Each figure is printed with its ratio to the
figure counted at commit 6e5ff6a, whose executor kept float images and gathered and scattered the rows
of every op (another count of the same kind, whose bytes differ from this one's by up to 15% on that code:
benchmarks.md, "View traffic on the meta device", has both).

    python benchmarks/view_traffic.py
    python benchmarks/view_traffic.py --presets clsa_single --batch-sizes 8   # quick
"""

import argparse
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pretrain.config import preset_cfg
from pretrain.views.batched import BatchedViews
from pretrain.views.sampler import sample
from pretrain.views.spec import ViewSet

# (preset, images per GPU): launches, GB, H2D copies of the float executor at 6e5ff6a.
FLOAT_EXECUTOR = {
    ("clsa_single", 256): (3067, 50.8, 32),
    ("clsa_single", 32): (2168, 6.5, 26),
    ("clsa_multi", 256): (10239, 159.0, 112),
    ("clsa_multi", 32): (8424, 20.1, 90),
}
# Ops that make no kernel: a view of a tensor, or memory not yet written.
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"}
_GATHER = torch.ops.aten.index.Tensor
_ROWS_OF_FIRST = {_GATHER, torch.ops.aten.index_put_.default}


class DeviceWork(TorchDispatchMode):
    """Counts the launches, operand bytes and host-to-device copies of the ops on the meta device."""

    def __init__(self):
        super().__init__()
        self.launches = self.bytes = self.h2d = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func.overloadpacket.__name__ in _NO_KERNEL:
            return out
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not any(t.device.type == "meta" for t in outputs + inputs):
            return out
        if any(t.device.type == "cpu" and t.numel() for t in inputs) and any(t.device.type == "meta" for t in outputs):
            self.h2d += 1
            return out
        self.launches += 1
        if func in _ROWS_OF_FIRST:
            # A gather reads, and a scatter writes, only the rows of its first operand that it returns
            # or is given: those rows twice (read and written) and the indices.
            rows = outputs[0] if func is _GATHER else inputs[-1]
            indices = inputs[1:] if func is _GATHER else inputs[1:-1]
            self.bytes += 2 * _nbytes(rows) + sum(map(_nbytes, indices))
            return out
        # An in-place op's result is its first operand: counted once.
        operands = {id(t): t for t in inputs + outputs if t.device.type == "meta"}.values()
        self.bytes += sum(map(_nbytes, operands))
        return out


def _nbytes(tensor):
    return tensor.numel() * tensor.element_size()


def imagenet_like(n, seed=0):
    """n uint8 3 x H x W images on the meta device, H in 281..500 and W in 333..500."""
    rng = np.random.default_rng(seed)
    sizes = zip(rng.integers(281, 501, n).tolist(), rng.integers(333, 501, n).tolist())
    return [torch.empty(3, h, w, dtype=torch.uint8, device="meta") for h, w in sizes]


def count(preset, batch_size):
    """DeviceWork of one batch of `preset`'s views, made as the batched path makes them on a GPU."""
    view_set = ViewSet.from_cfg(preset_cfg(preset))
    images, params = imagenet_like(batch_size), sample(view_set, 0, 0, range(batch_size))
    views = BatchedViews(view_set, crop_method="roi_align")
    with DeviceWork() as work:
        views(images, params, torch.bfloat16, torch.channels_last)
    return work


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["clsa_single", "clsa_multi", "mocov2"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[256, 32])
    args = parser.parse_args(argv)
    print(f"{'preset':<12} {'per GPU':>7} {'launches':>15} {'GB':>15} {'H2D':>11} {'host s':>7}")
    for preset in args.presets:
        for batch_size in args.batch_sizes:
            start = time.perf_counter()
            work = count(preset, batch_size)
            seconds = time.perf_counter() - start
            before = FLOAT_EXECUTOR.get((preset, batch_size))
            figures = (work.launches, work.bytes / 1e9, work.h2d)
            texts = [f"{value:.1f}" if i == 1 else f"{value}" for i, value in enumerate(figures)]
            if before:
                texts = [f"{text} ({value / old:.2f}x)" for text, value, old in zip(texts, figures, before)]
            launches, gigabytes, h2d = texts
            print(f"{preset:<12} {batch_size:>7} {launches:>15} {gigabytes:>15} {h2d:>11} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
