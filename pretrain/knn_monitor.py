"""Weighted kNN accuracy of the query encoder during pretraining (solo-learn's online kNN monitor).

The query encoder's backbone (its res5 map, global-average-pooled) is scored with transfer/knn.py's
weighted vote (common/knn.py) on KNN.ROOT/train and KNN.ROOT/val (the first KNN.TRAIN_PER_CLASS and
KNN.VAL_PER_CLASS images of each class): before the first step of a fresh run (written as iteration
-1), every KNN.PERIOD_EPOCHS epochs or KNN.PERIOD_ITERS iterations, and after the last step. Every
process extracts its share. The evaluation draws nothing from the training's random streams and
leaves the encoder in the mode it found it, so a run trains the same weights with the monitor as
without it.
"""

import logging
import time

import torch

from common.errors import DatasetError
from common.imagenet import center_crop_transform, image_folders
from common.knn import knn_accuracy
from common.trunk import pooled_trunk

logger = logging.getLogger("pretrain")


def first_per_class(dataset, per_class):
    """The first `per_class` images of each class of an ImageFolder, in its (sorted) order; 0 = all."""
    if per_class <= 0:
        return dataset
    seen, keep = {}, []
    for index, target in enumerate(dataset.targets):
        if seen.get(target, 0) < per_class:
            seen[target] = seen.get(target, 0) + 1
            keep.append(index)
    return torch.utils.data.Subset(dataset, keep)


def image_splits(cfg):
    """(train, val, number of classes) of KNN.ROOT; DatasetError naming the key if it is unusable."""
    transform = center_crop_transform(cfg.KNN.CROP_SIZE)
    try:
        train, val = image_folders(cfg.KNN.ROOT, train_transform=transform, val_transform=transform)
    except DatasetError as error:
        raise DatasetError(f"KNN.ROOT: {error}") from None
    return (
        first_per_class(train, cfg.KNN.TRAIN_PER_CLASS),
        first_per_class(val, cfg.KNN.VAL_PER_CLASS),
        len(train.classes),
    )


class KnnMonitor:
    def __init__(self, cfg, device, iters_per_epoch, amp):
        self.train_set, self.val_set, self.num_classes = image_splits(cfg)
        self.cfg, self.device, self.iters_per_epoch, self.amp = cfg.KNN, device, iters_per_epoch, amp
        self.num_workers, self.seconds = cfg.DATA.NUM_WORKERS, 0.0
        period = f"{cfg.KNN.PERIOD_ITERS} iterations" if cfg.KNN.PERIOD_ITERS else f"{cfg.KNN.PERIOD_EPOCHS} epoch(s)"
        logger.info(
            "kNN monitor: %d train and %d val images of %s, every %s",
            len(self.train_set),
            len(self.val_set),
            cfg.KNN.ROOT,
            period,
        )

    def due(self, iteration, last):
        """Whether to evaluate after 0-based `iteration`; the same answer on every process."""
        done = iteration + 1
        if self.cfg.PERIOD_ITERS:
            return last or done % self.cfg.PERIOD_ITERS == 0
        epochs, within = divmod(done, self.iters_per_epoch)
        return last or (within == 0 and epochs % self.cfg.PERIOD_EPOCHS == 0)

    @torch.no_grad()
    def evaluate(self, encoder, iteration, writer):
        """Scores `encoder`'s backbone, logs it and writes "knn/top1_k20"... through `writer` (None off rank 0)."""
        start = time.perf_counter()
        trunk = pooled_trunk(encoder, "res5")
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                metrics = knn_accuracy(
                    trunk, self.train_set, self.val_set, self.num_classes, self.device, num_workers=self.num_workers
                )
        finally:
            encoder.train(was_training)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        metrics = {f"knn/{name}": value for name, value in metrics.items()}
        if writer:
            writer.write(iteration, {**metrics, "knn/seconds": seconds})
        shown = "  ".join(
            f"{name.removeprefix('knn/')} {value:.1f}" for name, value in metrics.items() if name.startswith("knn/top1")
        )
        logger.info("kNN at iteration %d: %s (%.1f s)", iteration, shown, seconds)
        return metrics
