"""Every pretraining hyperparameter with the paper's default, in one place (yacs, as detectron2).

The defaults are CLSA-Single (paper sections 3.3 and 4.1); the presets in pretrain/configs/ inherit
from them through _BASE_ (fvcore's yacs CfgNode, the one detectron2 uses) and change only what
differs. A key that is not defined here is an error.
"""

import functools
import re
from pathlib import Path

import torch
from fvcore.common.config import CfgNode as CN

from common.config_files import merge_config
from common.errors import ConfigError
from common.trunk import ARCHS
from pretrain.knn_monitor import image_splits
from pretrain.views.spec import ViewSet

PRESETS = Path(__file__).resolve().parent / "configs"

_C = CN()

_C.MODEL = CN()
# Backbone of the query and the momentum key encoder (torchvision name): resnet50 in the paper,
# resnet18 for tests and the CPU demo; with "_w16" or "_w32" a narrow one (resnet18_w32: res2 of
# 32 channels, a quarter of the work), with "_cifar" (resnet18_cifar, resnet18_w32_cifar, ...) the
# CIFAR stem for images of 16-64 px (common/trunk.py).
_C.MODEL.ARCH = "resnet50"
# Size K of the FIFO queue of negative keys; must be a multiple of the global batch.
_C.MODEL.QUEUE_SIZE = 65536
# Momentum alpha of the key encoder update: phi = alpha * phi + (1 - alpha) * theta.
_C.MODEL.MOMENTUM = 0.999
# Temperature tau of the contrastive loss (eq. 1).
_C.MODEL.TEMPERATURE = 0.2
# Temperature of the DDM target and prediction distributions (eqs. 3-4); the official code's clsa_t.
_C.MODEL.DDM_TEMPERATURE = 0.2
# Balancing coefficient beta of the strong-view loss: L = L_C + beta * L_D.
_C.MODEL.DDM_WEIGHT = 1.0
# How strong queries are trained: "ddm" (CLSA), "contrastive" (Table 4 ablations: the strong query is
# used directly in eq. 1, weighted by DDM_WEIGHT).
_C.MODEL.STRONG_LOSS = "ddm"
# Output dimension of the projection head.
_C.MODEL.DIM = 128
# Hidden width of the 2-layer MLP head (Linear-ReLU-Linear, no BN), as MoCo v2.
_C.MODEL.MLP_HIDDEN = 2048
# Shuffle the key encoder's batch across processes so that BN cannot leak the positive (MoCo), and
# across the sub-batches of MODEL.SPLIT_BN_GROUPS within a process.
_C.MODEL.SHUFFLE_BN = True
# Use SyncBatchNorm in both encoders instead of shuffle-BN (GPU only; needs more than one process to
# make any difference).
_C.MODEL.SYNC_BN = False
# BN statistics over this many sub-batches of each process's batch (split BN, as in MoCo's one-GPU demo),
# the keys shuffled across them under MODEL.SHUFFLE_BN: one process then keeps the BN regime of that
# many GPUs. 1 = off. 0 = automatic: 8 sub-batches (the paper's 8 GPUs) when one process runs
# MODEL.SHUFFLE_BN, which has nothing to shuffle across otherwise, and its batch splits into 8
# sub-batches of at least 2 images; off otherwise.
_C.MODEL.SPLIT_BN_GROUPS = 0
# Recompute the strong queries' activations in the backward pass instead of keeping them (activation
# checkpointing): less memory for CLSA-Multi's five strong views, at the cost of their forward again.
_C.MODEL.CHECKPOINT_STRONG = False

_C.DATA = CN()
# ImageFolder root in the ImageNet train layout (root/<class>/<image>).
_C.DATA.ROOT = ""
# DataLoader worker processes per training process.
_C.DATA.NUM_WORKERS = 8
# Where the views are made: "per_image" (each image decoded and augmented in a DataLoader worker, on
# the CPU, pretrain/views/per_image.py), "batched" (workers only read the files; decoding and every
# view of the batch at once on the training device, pretrain/views/batched.py), or "auto": batched on
# a GPU, per image without one.
_C.DATA.AUGMENT = "auto"
# The views of each image (pretrain/views/spec.py defines what each view goes through). Each view is
# [crop size, min scale, max scale]: a RandomResizedCrop of that size from that fraction of the image
# area. The key: MoCo v2's 224 crop of 20-100% of the image.
_C.DATA.KEY_VIEW = [224, 0.2, 1.0]
# The weak queries (MoCo v2's weak stage) and the strong queries (the weak stage, then Table 1's ops).
# CLSA-Single: one weak 224 and one strong 96 view; the presets in pretrain/configs/ state theirs.
_C.DATA.WEAK_VIEWS = [[224, 0.2, 1.0]]
_C.DATA.STRONG_VIEWS = [[96, 0.086, 0.429]]
# Apply the strong stage to the key too (Table 4 "strong query & strong key").
_C.DATA.STRONG_KEY = False
# The strong stage: this many rounds of one of Table 1's 14 ops, each applied with this probability.
_C.DATA.STRONG_NUM_OPS = 5
_C.DATA.STRONG_PROB = 0.5
# The weak stage's colour (pretrain/views/spec.py): ColorJitter's brightness, contrast, saturation and
# hue strengths (MoCo v2's 0.4, 0.4, 0.4, 0.1; factors drawn from [max(0, 1 - s), 1 + s], the hue
# shift from [-h, h] turns), the share of views it is applied to, and the share turned grey.
_C.DATA.COLOR_JITTER = [0.4, 0.4, 0.4, 0.1]
_C.DATA.COLOR_JITTER_PROB = 0.8
_C.DATA.GRAYSCALE_PROB = 0.2

_C.SOLVER = CN()
# Global batch size over all processes (per-process batch = BATCH_SIZE / world size).
_C.SOLVER.BATCH_SIZE = 256
# SGD learning rate for a batch of 256; scaled linearly by BATCH_SIZE / 256.
_C.SOLVER.BASE_LR = 0.03
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.EPOCHS = 200
# Linear warmup from 0 over this many epochs, then cosine decay to 0 per iteration (paper: none).
_C.SOLVER.WARMUP_EPOCHS = 0
# Stop after this many iterations (the cosine schedule still spans EPOCHS); 0 = the full schedule.
_C.SOLVER.MAX_ITER = 0
# Save a checkpoint every this many epochs (and always at the end).
_C.SOLVER.CHECKPOINT_PERIOD = 10
# Also save every this many iterations (0 = off); for short runs and preemptible clusters.
_C.SOLVER.CHECKPOINT_PERIOD_ITERS = 0
# bfloat16 autocast of the forward pass on CUDA (ignored on the CPU, which trains in fp32).
_C.SOLVER.AMP = True
# channels_last memory format on CUDA.
_C.SOLVER.CHANNELS_LAST = True
# torch.compile the two encoders.
_C.SOLVER.COMPILE = False

# Weighted kNN monitor of the query encoder's backbone (pretrain/knn_monitor.py, transfer/knn.py's
# protocol): results in metrics.json ("knn/top1_k20", ...), TensorBoard and the log.
_C.KNN = CN()
# ImageFolder root holding train/ and val/ (e.g. ImageNet); empty = no monitor.
_C.KNN.ROOT = ""
# The first this many images of each class (in sorted order) form the train bank and the val queries; 0 = all.
_C.KNN.TRAIN_PER_CLASS = 100
_C.KNN.VAL_PER_CLASS = 10
# Evaluate every this many epochs, or every KNN.PERIOD_ITERS iterations when that is not 0; always
# also before the first step of a fresh run (iteration -1) and after the last.
_C.KNN.PERIOD_EPOCHS = 1
_C.KNN.PERIOD_ITERS = 0
# CenterCrop size after a resize to CROP_SIZE * 256 / 224 (224: the protocol; smaller for small images).
_C.KNN.CROP_SIZE = 224

# Write a line to log.txt and metrics.json / TensorBoard every this many iterations (each line syncs).
_C.LOG_PERIOD = 20
# Weights & Biases (optional; needs `pip install wandb`): rank 0 mirrors the TensorBoard scalars to a
# run of this project, resumed after a requeue (its id is kept in OUTPUT_DIR/wandb_run_id). Empty:
# $WANDB_PROJECT if set, else off. WANDB_MODE=offline logs without a network.
_C.WANDB = CN()
_C.WANDB.PROJECT = ""
_C.OUTPUT_DIR = "./output/pretrain"
# Seeds model initialisation, the queue, the sampler and every view (per epoch and image index).
_C.SEED = 0


def get_cfg():
    """A fresh copy of the defaults."""
    return _C.clone()


def preset_cfg(name):
    """The config of the preset pretrain/configs/<name>.yaml."""
    cfg = get_cfg()
    cfg.merge_from_file(str(PRESETS / f"{name}.yaml"))
    return cfg


# The sub-batches of MODEL.SPLIT_BN_GROUPS 0 (automatic): the paper's 8 GPUs.
AUTO_SPLIT_BN_GROUPS = 8


def split_bn_groups(cfg, world_size):
    """The BN sub-batches per process that MODEL.SPLIT_BN_GROUPS means for `world_size` processes."""
    m, auto = cfg.MODEL, AUTO_SPLIT_BN_GROUPS
    if m.SPLIT_BN_GROUPS:
        return m.SPLIT_BN_GROUPS
    batch = cfg.SOLVER.BATCH_SIZE // world_size
    one_process_shuffle = world_size == 1 and m.SHUFFLE_BN and not m.SYNC_BN
    return auto if one_process_shuffle and batch % auto == 0 and batch >= 2 * auto else 1


# The values each numeric key may take, in interval notation ("[" includes the bound, "(" excludes it);
# load_config refuses a value outside (NaN and infinity included) before a batch of 0 divides by zero
# or a temperature of 0 makes the loss non-finite. The view sizes and scales are checked by ViewSet.
RANGES = {
    "MODEL.QUEUE_SIZE": "(0, inf)",
    "MODEL.MOMENTUM": "[0, 1)",  # 1 would freeze the key encoder at its initialisation
    "MODEL.TEMPERATURE": "(0, inf)",
    "MODEL.DDM_TEMPERATURE": "(0, inf)",
    "MODEL.DDM_WEIGHT": "[0, inf)",
    "MODEL.DIM": "(0, inf)",
    "MODEL.MLP_HIDDEN": "(0, inf)",
    "MODEL.SPLIT_BN_GROUPS": "[0, inf)",
    "DATA.NUM_WORKERS": "[0, inf)",
    "DATA.STRONG_NUM_OPS": "[0, inf)",
    "DATA.STRONG_PROB": "[0, 1]",
    "DATA.COLOR_JITTER_PROB": "[0, 1]",
    "DATA.GRAYSCALE_PROB": "[0, 1]",
    "SOLVER.BATCH_SIZE": "(0, inf)",
    "SOLVER.BASE_LR": "(0, inf)",
    "SOLVER.MOMENTUM": "[0, 1)",
    "SOLVER.WEIGHT_DECAY": "[0, inf)",
    "SOLVER.EPOCHS": "(0, inf)",
    "SOLVER.WARMUP_EPOCHS": "[0, inf)",
    "SOLVER.MAX_ITER": "[0, inf)",
    "SOLVER.CHECKPOINT_PERIOD": "(0, inf)",
    "SOLVER.CHECKPOINT_PERIOD_ITERS": "[0, inf)",
    "KNN.TRAIN_PER_CLASS": "[0, inf)",
    "KNN.VAL_PER_CLASS": "[0, inf)",
    "KNN.PERIOD_EPOCHS": "(0, inf)",
    "KNN.PERIOD_ITERS": "[0, inf)",
    "KNN.CROP_SIZE": "(0, inf)",
    "LOG_PERIOD": "(0, inf)",
    "SEED": "[0, 18446744073709551616)",  # torch.manual_seed's 64 bits; numpy's generators refuse < 0
}


def _check_range(key, value, interval):
    low, high = interval[1:-1].split(", ")
    above = value >= float(low) if interval[0] == "[" else value > float(low)
    below = value <= float(high) if interval[-1] == "]" else value < float(high)
    if above and below:  # NaN fails both
        return
    if high == "inf" and value != float("inf"):
        must = f"{'at least' if interval[0] == '[' else 'greater than'} {low}"
    else:
        must = f"in {interval}"
    raise ConfigError(f"{key} is {value}; it must be {must}")


def load_config(config_file, opts, world_size):
    """The frozen config of `config_file` and the KEY VALUE `opts` for `world_size` processes; every
    mistake a user can fix raises ConfigError or DatasetError here, before any process starts."""
    cfg = merge_config(get_cfg(), config_file, opts, _where_keys_are)
    cfg.freeze()

    for key, interval in RANGES.items():
        _check_range(key, functools.reduce(getattr, key.split("."), cfg), interval)
    if cfg.MODEL.ARCH not in ARCHS:
        raise ConfigError(f"MODEL.ARCH {cfg.MODEL.ARCH!r} is not one of {', '.join(ARCHS)}")
    batch, queue = cfg.SOLVER.BATCH_SIZE, cfg.MODEL.QUEUE_SIZE
    if batch % world_size:
        raise ConfigError(
            f"SOLVER.BATCH_SIZE ({batch}) is the global batch and must be divisible by the {world_size} processes"
        )
    if queue % batch:
        raise ConfigError(
            f"MODEL.QUEUE_SIZE ({queue}) must be a multiple of SOLVER.BATCH_SIZE ({batch}); "
            f"e.g. MODEL.QUEUE_SIZE {max(queue // batch, 1) * batch}"
        )
    if cfg.DATA.AUGMENT == "workers":
        raise ConfigError("DATA.AUGMENT 'workers' is now called 'per_image'; set DATA.AUGMENT per_image")
    if cfg.DATA.AUGMENT not in ("auto", "per_image", "batched"):
        raise ConfigError(f"DATA.AUGMENT {cfg.DATA.AUGMENT!r} is not one of 'auto', 'per_image', 'batched'")
    if cfg.MODEL.SYNC_BN and not torch.cuda.is_available():
        raise ConfigError(
            "MODEL.SYNC_BN needs GPUs (torch's SyncBatchNorm has no CPU kernel); use MODEL.SHUFFLE_BN on the CPU"
        )
    groups = cfg.MODEL.SPLIT_BN_GROUPS
    if groups > 1 and cfg.MODEL.SYNC_BN:
        raise ConfigError(f"MODEL.SPLIT_BN_GROUPS {groups} and MODEL.SYNC_BN are two BN regimes; set one")
    if groups > 1 and (batch // world_size) % groups:
        raise ConfigError(
            f"MODEL.SPLIT_BN_GROUPS ({groups}) must divide the batch of each of the {world_size} processes "
            f"({batch // world_size}); set a divisor of it, or 1 (off)"
        )
    try:
        views = ViewSet.from_cfg(cfg).views
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.MODEL.STRONG_LOSS == "ddm" and views.strong and not views.weak:
        raise ConfigError(
            "MODEL.STRONG_LOSS 'ddm' needs a weak view as its target; "
            "set MODEL.STRONG_LOSS contrastive or add a weak view"
        )
    if cfg.KNN.ROOT:
        image_splits(cfg)
    return cfg


# Keys of the view presets before every view number moved into the config files.
_REMOVED_VIEW_KEYS = {
    "DATA.VIEWS",
    "DATA.KEY_SIZE",
    "DATA.KEY_SCALE",
    "DATA.WEAK_SIZES",
    "DATA.WEAK_SCALES",
    "DATA.STRONG_SIZES",
    "DATA.STRONG_SCALES",
}


def _where_keys_are(message):
    if _REMOVED_VIEW_KEYS & set(re.findall(r"[A-Z_]+\.[A-Z_.]+", str(message))):
        return (
            "the view keys DATA.VIEWS, DATA.KEY_SIZE/KEY_SCALE and DATA.*_SIZES/*_SCALES are now DATA.KEY_VIEW, "
            "DATA.WEAK_VIEWS and DATA.STRONG_VIEWS ([size, min scale, max scale] each), as the presets in "
            "pretrain/configs/ state them"
        )
    return "the keys and their defaults are in pretrain/config.py"
