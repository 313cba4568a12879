"""VOC07 linear classifier of the CLSA paper (section 4.1), two protocols, two metrics.

    python transfer/voc07_linear.py --weights CKPT                     # --protocol features
    python transfer/voc07_linear.py --weights CKPT --protocol clsa     # the reference code's protocol
    torchrun --nproc-per-node 2 transfer/voc07_linear.py --weights CKPT --protocol clsa
    srun --ntasks-per-node 2 python transfer/voc07_linear.py --weights CKPT --protocol clsa

--protocol clsa is the CLSA reference code's protocol (transfer/clsa_voc.py), the one that produced
Table 3's "VOC07 accuracy" 93.6: fine-tuning fc on augmented images with the backbone's BN statistics
adapting, the epoch chosen on val, 5-crop testing. It resumes from --output-dir. The default,
--protocol features, is described below.

A linear layer on the frozen global-average-pooled res5 feature (2048-d for ResNet-50), trained on
VOC2007 trainval as the paper states (the reference code trains on train and picks the epoch on
val), tested on VOC2007 test. SGD lr 0.05, momentum 0.9, no weight decay, batch 256, 100 epochs,
constant lr, BCE-with-logits summed over the 20 labels and the batch (reduction="sum", as the reference
code; the mean over batch x 20 would make each step 1/5120 as large and leave the layer undertrained);
difficult labels count as negative in training.
The layer starts at N(0, 0.01), bias 0 (as MoCo's linear evaluation). The features are those of
images resized to 256, then to 224x224 (no crop), ImageNet-normalised, and are not L2-normalised (the
backbone's own fc sees them so). They are computed once (no augmentation; the reference code
augments and uses 5-crop testing, which this protocol omits).

Metrics, both x100:
- voc07_mAP: per-class VOC AP, mean over classes (difficult excluded per class): comparable with the
  VOC07 mAP of MoCo, PIRL, SwAV and VISSL, and with transfer/voc07_svm.py.
- voc07_per_image_AP: mean over all test images of the AP of ranking the 20 classes, computed as the
  reference CLSA code computes it (a class present only as difficult is a negative; an image without a
  positive scores 0): what Table 3 calls "VOC07 accuracy" (CLSA 93.6). Table 3's other rows (MoCo v2
  87.1, SwAV 88.9, supervised 87.5) are those methods' own per-class mAPs, so that column mixes the
  two metrics.
"""

import time

import numpy as np
import torch
from torch import nn

from common import distributed
from common.cli import at_least, exit_on_user_error, positive
from common.datasets import VOC2007_SPLITS
from common.progress import progress_bar
from transfer import cli, clsa_voc, results
from transfer.metrics import per_class_voc_ap, per_image_ap
from transfer.voc import VOC_CLASSES, load_voc07, voc2007_root

# The defaults that differ between the protocols.
PROTOCOL_DEFAULTS = {"features": {"batch_size": 256, "workers": 2}, clsa_voc.NAME: {"batch_size": 16, "workers": 8}}


def get_parser():
    p = cli.parser(__doc__, "output/voc07_linear")
    p.add_argument(
        "--protocol",
        choices=sorted(PROTOCOL_DEFAULTS),
        default="features",
        help="features: linear layer on cached frozen features, trainval -> test (the paper's text); "
        "clsa: the CLSA reference code's protocol (Table 3's 93.6)",
    )
    cli.add_voc2007_data(p)
    p.add_argument("--epochs", type=at_least(1), default=100)
    p.add_argument("--lr", type=positive(), default=0.05)
    p.add_argument("--batch-size", type=at_least(1), help="default 256 (features), 16 (clsa; total over all processes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="feature cache (features; default: ~/.cache/clsa-suite/features)")
    p.add_argument(
        "--workers", type=at_least(0), help="data-loading workers per process; default 2 (features), 8 (clsa)"
    )
    p.add_argument(
        "--t-max", type=at_least(1), default=12, help="clsa: CosineAnnealingLR T_max, stepped once per epoch"
    )
    p.add_argument("--crop-size", type=at_least(1), default=300, help="clsa: train size and val/test crop")
    p.add_argument(
        "--resize", type=at_least(1), default=330, help="clsa: shorter side of val/test images before the crop"
    )
    return distributed.add_arguments(p)


def parse_args(argv=None):
    parser = get_parser()
    parser.set_defaults(**PROTOCOL_DEFAULTS[parser.parse_known_args(argv)[0].protocol])
    return parser.parse_args(argv)


def train_linear(features, labels, epochs, lr, batch_size, seed):
    """nn.Linear trained with summed BCE-with-logits on (images x classes) VOC labels; 1 positive, else 0."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(features)
    y = torch.from_numpy((labels == 1).astype(np.float32))
    layer = nn.Linear(x.shape[1], y.shape[1])
    nn.init.normal_(layer.weight, 0, 0.01, generator=generator)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=0)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    for _ in progress_bar(range(epochs), desc="linear layer", unit="epoch"):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss_fn(layer(x[batch]), y[batch]).backward()
            optimizer.step()
    return layer


def report(args, weights, root, splits, features, ap, image_ap, start, train_seconds):
    test_labels = splits["test"][1]
    print(f"VOC07 linear (res5, {features['test'].shape[1]}-d, {args.epochs} epochs):")
    print(f"  voc07_mAP (per-class, comparable with MoCo/PIRL/SwAV/VISSL VOC07 mAP):   {ap.mean():.2f}")
    print(f"  voc07_per_image_AP (CLSA Table 3 'VOC07 accuracy', over {len(test_labels)} images): {100 * image_ap:.2f}")
    settings = f"--protocol features, --lr {args.lr}, --batch-size {args.batch_size}, --epochs {args.epochs}"
    return results.write_results(
        args.output_dir,
        "voc07_linear",
        {"voc07_mAP": float(ap.mean()), "voc07_per_image_AP": 100 * image_ap},
        results.protocol(__doc__, settings),
        weights,
        root,
        VOC2007_SPLITS,
        {"trainval": len(splits["trainval"][1]), "test": len(test_labels)},
        start,
        wall_time_s={"train": train_seconds},
        protocol_name="features",
        comparable_with={
            "voc07_mAP": "per-class VOC07 mAP of MoCo/PIRL/SwAV/VISSL and transfer/voc07_svm.py",
            "voc07_per_image_AP": "CLSA paper Table 3 'VOC07 Accuracy' (CLSA's 93.6; the reference CLSA code)",
        },
        per_class_AP=dict(zip(VOC_CLASSES, map(float, ap))),
        feature_layer="res5",
        feature_dim=int(features["test"].shape[1]),
        seed=args.seed,
    )


def main(args):
    if args.protocol == clsa_voc.NAME:
        return clsa_voc.main(args)
    results.check_inputs(args.weights, voc2007_root, args.data_root)
    with results.output_folder(args.output_dir, "voc07_linear", args.weights):
        return _features_protocol(args)


def _features_protocol(args):
    start = time.perf_counter()
    weights, root, splits, features = load_voc07(args, "res5")
    train_start = time.perf_counter()
    layer = train_linear(features["trainval"], splits["trainval"][1], args.epochs, args.lr, args.batch_size, args.seed)
    train_seconds = time.perf_counter() - train_start
    with torch.no_grad():
        scores = layer(torch.from_numpy(features["test"])).numpy()
    ap = 100 * per_class_voc_ap(scores, splits["test"][1])
    image_ap = per_image_ap(scores, splits["test"][1])
    return report(args, weights, root, splits, features, ap, image_ap, start, train_seconds)


def cli_main():
    """`python transfer/voc07_linear.py`, and the `clsa-voc07-linear` command of an installed package."""
    exit_on_user_error(main, parse_args())


if __name__ == "__main__":
    cli_main()
