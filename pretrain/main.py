"""CLSA / MoCo v2 pretraining.

    python pretrain/main.py --config-file pretrain/configs/clsa_single.yaml DATA.ROOT /imagenet/train
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        pretrain/main.py --config-file pretrain/configs/clsa_multi.yaml DATA.ROOT /imagenet/train

A plain `python pretrain/main.py` starts one process per GPU itself (--num-gpus, default all; one
process on a machine without GPU); under torchrun it is one of torchrun's processes.
"""

import argparse
import functools
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common import slurm
from common.cli import at_least, one_line_errors
from common.io import atomic_path, remove_stale_temp_files
from pretrain.builder import CLSA
from pretrain.checkpoint import (
    CheckpointError,
    check_same_run,
    find_resume_checkpoint,
    first_non_finite,
    last_saved,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from pretrain.config import get_cfg
from pretrain.data import EncodedImageFolder, PretrainImageFolder, check_image_root, collate_encoded, decode_batch
from pretrain.knn_monitor import KnnMonitor, image_splits
from pretrain.loader import STOP_SIGNALS, ResumableDistributedSampler, build_loader, fit_shared_memory
from pretrain.views.batched import BatchedViews
from pretrain.views.per_image import normalize
from pretrain.views.spec import ViewSet

logger = logging.getLogger("pretrain")


def parse_args(argv=None):
    parser = one_line_errors(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )
    parser.add_argument(
        "--config-file", default="", metavar="FILE", help="YAML preset, e.g. pretrain/configs/clsa_single.yaml"
    )
    parser.add_argument(
        "--resume",
        default="",
        metavar="auto|PATH",
        help="'auto': continue from the newest readable checkpoint in OUTPUT_DIR (start fresh if none); "
        "or a checkpoint file",
    )
    parser.add_argument(
        "--num-gpus",
        type=at_least(1),
        default=None,
        help="processes to start on this machine (default: one per GPU, or 1 without GPU); ignored under torchrun",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides, e.g. SOLVER.BATCH_SIZE 512"
    )
    slurm.add_arguments(parser)
    return parser.parse_args(argv)


# Config values outside these ranges are refused by setup (a batch of 0 would divide by zero later).
_POSITIVE = (
    "SOLVER.BATCH_SIZE",
    "SOLVER.BASE_LR",
    "SOLVER.EPOCHS",
    "SOLVER.CHECKPOINT_PERIOD",
    "MODEL.QUEUE_SIZE",
    "MODEL.DIM",
    "MODEL.MLP_HIDDEN",
    "LOG_PERIOD",
)
_NON_NEGATIVE = (
    "SOLVER.MAX_ITER",
    "SOLVER.CHECKPOINT_PERIOD_ITERS",
    "SOLVER.WARMUP_EPOCHS",
    "SOLVER.MOMENTUM",
    "SOLVER.WEIGHT_DECAY",
    "MODEL.DDM_WEIGHT",
    "DATA.NUM_WORKERS",
)


def setup(args, world_size):
    """The frozen config for `args`; every error a user can fix is raised here, before any process starts."""
    cfg = get_cfg()
    misplaced = [opt for opt in args.opts[::2] if opt.startswith("-")]
    if misplaced:
        raise ValueError(f"{misplaced[0]} comes after the KEY VALUE overrides; put options before them")
    if len(args.opts) % 2:
        raise ValueError(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    # yacs reports an unknown key with an assert (overrides) or a KeyError (files).
    try:
        if args.config_file:
            cfg.merge_from_file(args.config_file)
    except (KeyError, AssertionError) as e:
        raise KeyError(f"{args.config_file}: {e.args[0]}; {_where_keys_are(e.args[0])}") from None
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError) as e:
        raise KeyError(f"{e.args[0]} in the command-line overrides; {_where_keys_are(e.args[0])}") from None
    cfg.freeze()

    for key in _POSITIVE + _NON_NEGATIVE:
        value = functools.reduce(getattr, key.split("."), cfg)
        if not (value > 0 if key in _POSITIVE else value >= 0):  # NaN fails both
            raise ValueError(f"{key} is {value}; it must be {'greater than' if key in _POSITIVE else 'at least'} 0")
    batch, queue = cfg.SOLVER.BATCH_SIZE, cfg.MODEL.QUEUE_SIZE
    if batch % world_size:
        raise ValueError(
            f"SOLVER.BATCH_SIZE ({batch}) is the global batch and must be divisible by the {world_size} processes"
        )
    if queue % batch:
        raise ValueError(
            f"MODEL.QUEUE_SIZE ({queue}) must be a multiple of SOLVER.BATCH_SIZE ({batch}); "
            f"e.g. MODEL.QUEUE_SIZE {max(queue // batch, 1) * batch}"
        )
    if cfg.DATA.AUGMENT not in ("auto", "workers", "batched"):
        raise ValueError(f"DATA.AUGMENT {cfg.DATA.AUGMENT!r} is not one of 'auto', 'workers', 'batched'")
    if cfg.MODEL.SYNC_BN and not torch.cuda.is_available():
        raise ValueError(
            "MODEL.SYNC_BN needs GPUs (torch's SyncBatchNorm has no CPU kernel); use MODEL.SHUFFLE_BN on the CPU"
        )
    views = ViewSet.from_cfg(cfg).views
    if cfg.MODEL.STRONG_LOSS == "ddm" and views.strong and not views.weak:
        raise ValueError(
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


def learning_rate(cfg, iteration, iters_per_epoch):
    """Linear warmup, then cosine decay to 0 over the whole schedule, per iteration."""
    peak = cfg.SOLVER.BASE_LR * cfg.SOLVER.BATCH_SIZE / 256
    warmup = cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch
    total = cfg.SOLVER.EPOCHS * iters_per_epoch
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (iteration - warmup) / max(total - warmup, 1)))


def train_step(net, optimizer, views, amp):
    """One SGD step on a batch's Views; returns the model's outputs, still on the device."""
    with torch.autocast(views.key.device.type, dtype=torch.bfloat16, enabled=amp):
        out = net(views.key, views.weak, views.strong)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return out


class StopRequest:
    """Records SIGTERM/SIGUSR1 (cluster preemption) so the loop can checkpoint at a step boundary."""

    def __init__(self):
        self.signum = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)

    def _record(self, signum, frame):
        self.signum = signum

    def agreed(self, group):
        """True on every process as soon as any process was signalled."""
        if group is None:
            return self.signum is not None
        flag = torch.tensor([self.signum is not None], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return bool(flag.item())


def _logged_iteration(line):
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):  # a line cut short by a kill mid-write
        return -1


class MetricsWriter:
    """metrics.json JSON lines and TensorBoard scalars, on rank 0 (detectron2's outputs).

    Lines of iterations from `start_iter` on are dropped first: a run killed after logging them but
    before its checkpoint redoes those iterations, which must not appear twice.
    """

    def __init__(self, output_dir, start_iter):
        from torch.utils.tensorboard import SummaryWriter

        path = Path(output_dir) / "metrics.json"
        if path.is_file():
            kept = [
                line for line in path.read_text().splitlines(keepends=True) if -1 < _logged_iteration(line) < start_iter
            ]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(kept))
        self.json = open(path, "a")
        self.tensorboard = SummaryWriter(output_dir)

    def write(self, iteration, metrics):
        self.json.write(json.dumps({"iteration": iteration, **metrics}, sort_keys=True) + "\n")
        self.json.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, iteration)

    def close(self):
        self.json.close()
        self.tensorboard.close()


def _setup_logging(output_dir, rank):
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.handlers.clear()
    logger.propagate = False
    formatter = logging.Formatter(f"[%(asctime)s rank{rank} %(name)s] %(message)s", "%m/%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        handlers.append(logging.FileHandler(Path(output_dir) / "log.txt"))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)


@dataclass
class PretrainData:
    dataset: PretrainImageFolder
    loader: torch.utils.data.DataLoader
    sampler: ResumableDistributedSampler
    batched: bool
    views_on_device: Callable  # (loader batch, indices) -> Views of normalised batches on the device
    stream: torch.cuda.Stream | None  # where the views are made on a GPU


def build_data(cfg, device, rank, world_size, view_dtype=torch.float32, memory_format=torch.contiguous_format):
    """The data set, loader and view executor of DATA.AUGMENT for one process of `world_size`."""
    view_set = ViewSet.from_cfg(cfg)
    batched = cfg.DATA.AUGMENT == "batched" or (cfg.DATA.AUGMENT == "auto" and device.type == "cuda")
    if batched:
        dataset, batched_views = EncodedImageFolder(cfg.DATA.ROOT, view_set, cfg.SEED), BatchedViews(view_set)

        def views_on_device(encoded, indices):
            images, indices = decode_batch(encoded, indices, dataset, device)
            return batched_views(images, dataset.view_params(indices), view_dtype, memory_format)
    else:
        dataset = PretrainImageFolder(cfg.DATA.ROOT, view_set, cfg.SEED)

        def views_on_device(views, indices):
            return normalize(views, device, view_dtype, memory_format)

    # A batch in the workers' shared memory: uint8 views, or JPEG bytes (ImageNet's average is ~110 KiB).
    image_bytes = 128 * 1024 if batched else sum(3 * view.size**2 for view in view_set.views.flat())
    fit_shared_memory(image_bytes * cfg.SOLVER.BATCH_SIZE // world_size, cfg.DATA.NUM_WORKERS)
    # Pinned memory speeds up the copy of finished views; JPEG bytes are read by the decoder on the host.
    loader, sampler = build_loader(
        dataset,
        cfg.SOLVER.BATCH_SIZE // world_size,
        rank,
        world_size,
        cfg.SEED,
        cfg.DATA.NUM_WORKERS,
        pin_memory=device.type == "cuda" and not batched,
        collate_fn=collate_encoded if batched else None,
    )
    # One stream for the whole run: the caching allocator keeps freed blocks per stream.
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    return PretrainData(dataset, loader, sampler, batched, views_on_device, stream)


def batches_on_device(data, device):
    """The views of each batch of `data.loader`, on the device.

    On a GPU they are made on a side stream. The host runs ahead of the GPU, so the next batch's
    decoding and views run while the kernels of the step before still execute.
    """
    side = data.stream
    for batch, indices in data.loader:
        if side is None:
            yield data.views_on_device(batch, indices)
            continue
        with torch.cuda.stream(side):
            views = data.views_on_device(batch, indices)
        training = torch.cuda.current_stream(device)
        training.wait_stream(side)
        for view in views.flat():
            view.record_stream(training)  # made on `side`, freed after their use on `training`
        yield views


def train(cfg, resume, rank, world_size, local_rank):
    """The training loop of one process."""
    stop = StopRequest()  # from the start: a signal during set-up stops the run at its first step
    output_dir = Path(cfg.OUTPUT_DIR)
    output_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(output_dir, rank)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed view sizes: the fastest algorithm per size, found once
    amp = cuda and cfg.SOLVER.AMP
    memory_format = torch.channels_last if cuda and cfg.SOLVER.CHANNELS_LAST else torch.contiguous_format
    # A gloo group for the per-step "was anyone signalled" vote: it never waits for the GPU.
    control = None if world_size == 1 else (dist.new_group(backend="gloo") if cuda else dist.group.WORLD)
    # Before config.yaml is overwritten: a checkpoint of another run stops here and loses nothing.
    found = (
        find_resume_checkpoint(output_dir)
        if resume == "auto"
        else (resume, load_checkpoint(resume))
        if resume
        else None
    )
    if found:
        check_same_run(*found, cfg.dump())
    if rank == 0:
        for path in remove_stale_temp_files(output_dir):
            logger.info("removed %s, left by a run killed while writing it", path)
        with atomic_path(output_dir / "config.yaml") as tmp:
            tmp.write_text(cfg.dump())
    logger.info(
        "%d process(es) on %s, global batch %d, bf16 autocast %s, %s",
        world_size,
        device.type,
        cfg.SOLVER.BATCH_SIZE,
        amp,
        memory_format,
    )
    if world_size == 1 and cfg.MODEL.SHUFFLE_BN:
        logger.info("one process: shuffle-BN has nothing to shuffle across and is a no-op")

    torch.manual_seed(cfg.SEED)  # the same initial weights and queue on every process
    m = cfg.MODEL
    model = CLSA(
        m.ARCH,
        m.DIM,
        m.MLP_HIDDEN,
        m.QUEUE_SIZE,
        m.MOMENTUM,
        m.TEMPERATURE,
        m.DDM_TEMPERATURE,
        m.DDM_WEIGHT,
        m.STRONG_LOSS,
        shuffle_bn=m.SHUFFLE_BN and not m.SYNC_BN,
        checkpoint_strong=m.CHECKPOINT_STRONG,
    )
    if m.SYNC_BN:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device, memory_format=memory_format)
    s = cfg.SOLVER
    optimizer = torch.optim.SGD(
        model.encoder_q.parameters(),
        lr=s.BASE_LR,
        momentum=s.MOMENTUM,
        weight_decay=s.WEIGHT_DECAY,
        fused=True if cuda else None,
    )

    data = build_data(
        cfg, device, rank, world_size, view_dtype=torch.bfloat16 if amp else torch.float32, memory_format=memory_format
    )
    dataset, sampler = data.dataset, data.sampler
    logger.info("views made %s", f"in batches on {device.type}" if data.batched else "per image in DataLoader workers")
    iters_per_epoch = sampler.batches_per_epoch
    if iters_per_epoch == 0:
        raise ValueError(f"{cfg.DATA.ROOT} has {len(dataset)} images, fewer than one global batch of {s.BATCH_SIZE}")
    max_iter = s.MAX_ITER or s.EPOCHS * iters_per_epoch

    start_iter = 0
    if found:
        path, checkpoint = found
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng(checkpoint["rng"])
        start_iter = checkpoint["iteration"] + 1
        logger.info("resumed from %s at iteration %d", path, start_iter)
    elif resume == "auto":
        logger.info("no checkpoint in %s; starting from scratch", output_dir)
    if s.COMPILE:
        # The encoders are compiled, not the DDP module: the forward between them holds shuffle-BN's
        # collectives and the queue's in-place update, which would break the graph. One graph per view
        # size, twice for strong views under MODEL.CHECKPOINT_STRONG: raise dynamo's limit to fit them,
        # or it falls back to eager for the rest without an error.
        sizes = {view.size for view in ViewSet.from_cfg(cfg).views.flat()}
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(sizes) + 2)
        model.encoder_q.compile(dynamic=False)
        model.encoder_k.compile(dynamic=False)
    net = (
        model
        if world_size == 1
        else DistributedDataParallel(
            model,
            device_ids=[local_rank] if cuda else None,
            broadcast_buffers=False,
            gradient_as_bucket_view=True,  # gradients live in DDP's buckets: no copy in and out per step
        )
    )  # the queue is identical by construction

    writer = MetricsWriter(output_dir, start_iter) if rank == 0 else None
    run_start = time.perf_counter()
    monitor = KnnMonitor(cfg, device, iters_per_epoch, amp) if cfg.KNN.ROOT else None
    if monitor and start_iter == 0:
        monitor.evaluate(model.encoder_q, -1, writer)
    bar = tqdm(total=max_iter, initial=start_iter, disable=rank != 0, dynamic_ncols=True, desc="pretrain")
    # Device-side accumulators, read only every LOG_PERIOD iterations so the step never waits for the GPU.
    window_sums, window_count = None, 0
    first_bad_iter = torch.full((), -1, dtype=torch.long, device=device)
    data_time, window_start = 0.0, time.perf_counter()

    def stop_if_diverged(iteration, probe=None):
        """Raises FloatingPointError if a loss so far was not finite or, given the views of the last
        batch as `probe`, if the state a checkpoint would hold is not usable: a weight, BN statistic or
        queue entry is not finite, or the query encoder's output on the probe is not (weights that grew
        to 1e28 are finite, yet the next step overflows)."""
        diverged = None
        if probe is not None:
            diverged = first_non_finite(model.state_dict())
            diverged = diverged and f"{diverged} is not finite"
            if diverged is None:
                model.encoder_q.eval()  # running statistics: the probe leaves no trace in the state
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    if not torch.isfinite(model.encoder_q(probe.key)).all():
                        diverged = "the query encoder's output is not finite"
                model.encoder_q.train()
        flags = torch.stack([first_bad_iter, torch.tensor(int(diverged is not None), device=device)])
        if control is not None:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad_loss, bad_state = flags.tolist()
        if bad_loss < 0 and not bad_state:
            return
        what = (
            f"non-finite loss at iteration {bad_loss}"
            if bad_loss >= 0
            else f"the state after iteration {iteration} diverged ({diverged or 'on another process'})"
        )
        good = last_saved(output_dir)
        restart = (
            f"the last good checkpoint is {good}: lower SOLVER.BASE_LR or MODEL.DDM_TEMPERATURE, or "
            f"disable SOLVER.AMP, and rerun with --resume auto"
            if good
            else f"no checkpoint was saved in {output_dir}: lower SOLVER.BASE_LR or MODEL.DDM_TEMPERATURE, or "
            f"disable SOLVER.AMP, and start again"
        )
        raise FloatingPointError(f"{what}; stopped without saving; {restart}")

    def checkpoint(name, iteration, probe):
        stop_if_diverged(iteration, probe)
        if rank == 0:
            path = save_checkpoint(
                output_dir, name, model, optimizer, iteration, iteration // iters_per_epoch, cfg.dump()
            )
            logger.info("saved %s", path)
        if control is not None:
            dist.barrier(group=control)

    iteration, done = start_iter, start_iter >= max_iter
    model.train()
    while not done:
        epoch, start_batch = divmod(iteration, iters_per_epoch)
        sampler.set_epoch(epoch, start_batch)
        data.dataset.set_epoch(epoch)
        fetch_start = time.perf_counter()
        for batch_views in batches_on_device(data, device):
            data_time += time.perf_counter() - fetch_start
            lr = learning_rate(cfg, iteration, iters_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            out = train_step(net, optimizer, batch_views, amp)

            names = sorted(out)
            values = torch.stack([out[k].detach().float() for k in names])
            window_sums = values if window_sums is None else window_sums + values
            window_count += 1
            newly_bad = ~torch.isfinite(out["loss"].detach()) & (first_bad_iter < 0)
            first_bad_iter = torch.where(newly_bad, iteration, first_bad_iter)
            bar.update(1)

            last = iteration + 1 == max_iter
            logging_now = (iteration + 1) % cfg.LOG_PERIOD == 0 or last
            if logging_now:
                stop_if_diverged(iteration)
                if control is not None:
                    dist.all_reduce(window_sums)
                means = (window_sums / (window_count * world_size)).tolist()
                elapsed = time.perf_counter() - window_start
                metrics = {
                    **dict(zip(names, means)),
                    "lr": lr,
                    "img_per_s": window_count * s.BATCH_SIZE / elapsed,
                    "data_time": data_time / window_count,
                    "data_time_share": data_time / elapsed,
                    "skipped_images": dataset.num_skipped,
                }
                if writer:
                    writer.write(iteration, metrics)
                bar.set_postfix(
                    loss=f"{metrics['loss']:.3f}",
                    lr=f"{lr:.4g}",
                    img_s=f"{metrics['img_per_s']:.1f}",
                    data=f"{metrics['data_time_share']:.0%}",
                )
                window_sums, window_count, data_time, window_start = None, 0, 0.0, time.perf_counter()

            # Several processes agree on a stop at each log period: a vote every step would cost a
            # gloo round trip per step for a signal that comes once a run.
            stopping = stop.agreed(control) if control is None or logging_now else False
            completed_epochs, epoch_end = divmod(iteration + 1, iters_per_epoch)
            if last:
                checkpoint("model_final", iteration, batch_views)
            elif (
                stopping
                or (epoch_end == 0 and completed_epochs % s.CHECKPOINT_PERIOD == 0)
                or (s.CHECKPOINT_PERIOD_ITERS and (iteration + 1) % s.CHECKPOINT_PERIOD_ITERS == 0)
            ):
                checkpoint(f"model_{iteration:07d}", iteration, batch_views)
            if monitor and monitor.due(iteration, last):
                monitor.evaluate(model.encoder_q, iteration, writer)
            if stopping and not last:
                logger.info("stop signal: saved iteration %d; continue with --resume auto", iteration)
            iteration += 1
            if stopping or last:
                done = True
                break
            fetch_start = time.perf_counter()
    bar.close()
    if monitor:
        logger.info(
            "kNN monitor: %.0f s, %.1f%% of the run",
            monitor.seconds,
            100 * monitor.seconds / (time.perf_counter() - run_start),
        )
    if dataset.num_skipped:
        logger.warning("%d reads of unreadable images were skipped (see the warnings above)", dataset.num_skipped)
    if writer:
        writer.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank, world_size, cfg, resume):
    # mp.spawn passes its start method on to the processes it starts; their DataLoader workers fork,
    # as in any other process on Linux (the view transforms hold lambdas, which spawn cannot pickle).
    mp.set_start_method("fork", force=True)
    _run(cfg, resume, local_rank, world_size, local_rank)


def _run(cfg, resume, rank, world_size, local_rank):
    if world_size > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        train(cfg, resume, rank, world_size, local_rank)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def configure(args, world_size=None):
    """(cfg, world size, under torchrun?) for `world_size` processes (default: torchrun's, or those
    this machine starts); raises ValueError, KeyError or FileNotFoundError for every mistake a user
    can fix, before anything is written."""
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if world_size is None:
        world_size = (
            int(os.environ["WORLD_SIZE"])
            if torchrun
            else args.num_gpus
            if args.num_gpus is not None
            else max(torch.cuda.device_count(), 1)
        )
    cfg = setup(args, world_size)
    check_image_root(cfg.DATA.ROOT)
    if args.resume not in ("", "auto") and not os.path.isfile(args.resume):
        raise FileNotFoundError(f"--resume {args.resume}: no such file; pass a checkpoint file, or --resume auto")
    return cfg, world_size, torchrun


def main(args, configured=None):
    cfg, world_size, torchrun = configured or configure(args)
    if torchrun:
        _run(cfg, args.resume, int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))
    elif world_size == 1:
        _run(cfg, args.resume, 0, 1, 0)
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        context = mp.spawn(_spawned, args=(world_size, cfg, args.resume), nprocs=world_size, join=False)

        def forward_signal(signum, frame):  # preemption reaches the launcher; the workers must save
            for process in context.processes:
                if process.is_alive():
                    os.kill(process.pid, signum)

        for signum in STOP_SIGNALS:
            signal.signal(signum, forward_signal)
        while not context.join():
            pass


def run_argv(argv):
    """main() of a command line's arguments: what a SLURM job runs (common/slurm.py)."""
    main(parse_args(argv))


if __name__ == "__main__":
    args = parse_args()
    flags, job_argv = slurm.split_argv(sys.argv[1:]) if args.slurm else (None, None)
    try:
        # With --slurm, the job's processes are its nodes' GPUs; a mistake stops here, not in the job.
        configured = configure(args, flags.nodes * max(flags.gpus_per_node, 1) if flags else None)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        sys.exit(2)
    if flags:
        slurm.submit(
            flags,
            slurm.Job(
                "pretrain.main:run_argv", job_argv, ["--resume", "auto"], task_per_gpu=True, stop_signal=signal.SIGUSR1
            ),
            configured[0].OUTPUT_DIR,
            "clsa-pretrain",
        )
        sys.exit(0)
    try:
        main(args, configured)
    except CheckpointError as error:  # a damaged checkpoint, or one of another run
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
