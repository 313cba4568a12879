"""VOC07 linear classifier of the CLSA paper (section 4.1) on frozen res5 features, two metrics.

    python transfer/voc07_linear.py --weights CKPT

A linear layer on the frozen global-average-pooled res5 feature (2048-d for ResNet-50), trained on
VOC2007 trainval as the paper states (the reference code trains on train and picks the epoch on
val), tested on VOC2007 test. SGD lr 0.05, momentum 0.9, no weight decay, batch 256, 100 epochs,
constant lr, BCE-with-logits summed over the 20 labels and the batch (reduction="sum", as the reference
code; the mean over batch x 20 would make each step 1/5120 as large and leave the layer undertrained);
difficult labels count as negative in training.
The layer starts at N(0, 0.01), bias 0 (as MoCo's linear evaluation). Features are computed once
(no augmentation; the reference code augments and uses 5-crop testing, which this protocol omits).

Metrics, both x100:
- voc07_mAP: per-class VOC AP, mean over classes (difficult excluded per class): comparable with the
  VOC07 mAP of MoCo, PIRL, SwAV and VISSL, and with transfer/voc07_svm.py.
- voc07_per_image_AP: mean over test images of the AP of ranking the 20 classes (difficult labels
  left out): what the reference CLSA code computes and Table 3 calls "VOC07 accuracy" (CLSA 93.6).
  Table 3's other rows (MoCo v2 87.1, SwAV 88.9, supervised 87.5) are those methods' own per-class
  mAPs, so that column mixes the two metrics.
"""
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.cli import at_least, positive
from common.datasets import VOC2007_SPLITS
from common.io import fingerprint_files
from transfer import cli
from transfer.metrics import per_class_voc_ap, per_image_ap
from transfer.voc import VOC_CLASSES


def get_parser():
    p = cli.parser(__doc__.split("\n")[0], "output/voc07_linear")
    p.add_argument("--data-root", help="VOC2007 folder (default: $DETECTRON2_DATASETS/VOC2007)")
    p.add_argument("--epochs", type=at_least(1), default=100)
    p.add_argument("--lr", type=positive(), default=0.05)
    p.add_argument("--batch-size", type=at_least(1), default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="feature cache (default: ~/.cache/clsa-suite/features)")
    p.add_argument("--workers", type=at_least(0), default=2, help="data-loading workers for extraction")
    return p


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
    for _ in tqdm(range(epochs), desc="linear layer", unit="epoch"):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss_fn(layer(x[batch]), y[batch]).backward()
            optimizer.step()
    return layer


def main(args):
    start = time.perf_counter()
    weights, root, splits, features = cli.load_voc07(args, "res5")
    train_start = time.perf_counter()
    layer = train_linear(features["trainval"], splits["trainval"][1], args.epochs, args.lr, args.batch_size,
                         args.seed)
    with torch.no_grad():
        scores = layer(torch.from_numpy(features["test"])).numpy()
    test_labels = splits["test"][1]
    ap = 100 * per_class_voc_ap(scores, test_labels)
    image_ap, images = per_image_ap(scores, test_labels)
    print(f"VOC07 linear (res5, {features['test'].shape[1]}-d, {args.epochs} epochs):")
    print(f"  voc07_mAP (per-class, comparable with MoCo/PIRL/SwAV/VISSL VOC07 mAP):   {ap.mean():.2f}")
    print(f"  voc07_per_image_AP (CLSA Table 3 'VOC07 accuracy', over {images} images): {100 * image_ap:.2f}")
    results = {
        "task": "voc07_linear",
        "metrics": {"voc07_mAP": float(ap.mean()), "voc07_per_image_AP": 100 * image_ap},
        "comparable_with": {
            "voc07_mAP": "per-class VOC07 mAP of MoCo/PIRL/SwAV/VISSL and transfer/voc07_svm.py",
            "voc07_per_image_AP": "CLSA paper Table 3 'VOC07 Accuracy' (CLSA's 93.6; the reference CLSA code)",
        },
        "per_class_AP": dict(zip(VOC_CLASSES, map(float, ap))),
        "protocol": (f"CLSA section 4.1: linear layer (N(0, 0.01) init) on frozen GAP res5 features (resize 256 "
                     f"then 224x224, no crop, not normalised), trained on VOC07 trainval, SGD lr {args.lr} momentum "
                     f"0.9 wd 0, batch {args.batch_size}, {args.epochs} epochs, constant lr, BCE-with-logits "
                     "summed over labels and batch (reduction='sum', as the reference code), "
                     "difficult = negative; tested on VOC07 test. voc07_mAP: VOC all-point AP per class, difficult "
                     "excluded, mean over 20. voc07_per_image_AP: label-ranking AP per test image, difficult labels "
                     f"left out, images without a positive skipped ({images} of {len(test_labels)} used)."),
        "feature_layer": "res5",
        "feature_dim": int(features["test"].shape[1]),
        "weights": weights,
        "seed": args.seed,
        "data_root": str(root),
        "data": fingerprint_files(root, VOC2007_SPLITS),
        "split_sizes": {"trainval": len(splits["trainval"][1]), "test": len(test_labels)},
        "wall_time_s": {"train": time.perf_counter() - train_start, "total": time.perf_counter() - start},
    }
    cli.write_results(args.output_dir, results)
    return results


if __name__ == "__main__":
    cli.run(lambda: main(get_parser().parse_args()))
