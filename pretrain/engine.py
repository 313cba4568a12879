"""The pretraining engine of one process: its set-up (output folder, model, optimizer, data, resume)
apart from the training loop, as MoCo and DINO keep their per-epoch loop apart from everything else.

`train` is what each process runs; pretrain/main.py parses the command line and starts the processes.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from common.environment import startup_line
from common.errors import DatasetError
from common.io import atomic_path, remove_stale_temp_files
from pretrain.builder import CLSA
from pretrain.config import split_bn_groups
from pretrain.data import DeviceBatches, PretrainData, build_data
from pretrain.divergence import DivergenceGuard
from pretrain.knn_monitor import KnnMonitor
from pretrain.metrics import MetricsWriter, MetricWindow, peak_memory, progress_line, setup_logging, wandb_project
from pretrain.preemption import StopRequest
from pretrain.run_state import check_same_run, find_resume_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from pretrain.schedule import CheckpointSchedule, learning_rate
from pretrain.views.spec import ViewSet

logger = logging.getLogger("pretrain")


def train_step(net, optimizer, views, amp):
    """One SGD step on a batch's Views; returns the model's outputs, still on the device."""
    with torch.autocast(views.key.device.type, dtype=torch.bfloat16, enabled=amp):
        out = net(views.key, views.weak, views.strong)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return out


@dataclass
class Training:
    """Everything the loop of one process needs, built by `build_training`."""

    cfg: object
    rank: int
    world_size: int
    device: torch.device
    amp: bool
    control: object  # the process group of the stop vote and the metric all-reduce; None for one process
    model: CLSA
    net: torch.nn.Module  # the model, in DistributedDataParallel when there are several processes
    optimizer: torch.optim.Optimizer
    data: PretrainData
    start_iter: int
    max_iter: int
    iters_per_epoch: int
    checkpoints: CheckpointSchedule
    guard: DivergenceGuard
    writer: MetricsWriter | None  # rank 0 only
    monitor: KnnMonitor | None

    def save(self, name, iteration, probe):
        """Writes checkpoint `name` after `iteration` (rank 0), once every process found the state usable."""
        self.guard.check(iteration, probe)
        if self.rank == 0:
            path = save_checkpoint(
                self.cfg.OUTPUT_DIR,
                name,
                self.model,
                self.optimizer,
                iteration,
                iteration // self.iters_per_epoch,
                self.cfg.dump(),
            )
            logger.info("saved %s", path)
        if self.control is not None:
            dist.barrier(group=self.control)


def _find_resume(resume, output_dir, config_yaml):
    """(path, checkpoint) that --resume names, or None; refuses a checkpoint of another run."""
    if not resume:
        return None
    found = find_resume_checkpoint(output_dir) if resume == "auto" else (resume, load_checkpoint(resume))
    if found:
        check_same_run(*found, config_yaml)
    elif resume == "auto":
        logger.info("no checkpoint in %s; starting from scratch", output_dir)
    return found


def build_model(cfg, device, memory_format, world_size):
    """The CLSA model of `cfg` on `device`, the same initial weights and queue on each of `world_size` processes."""
    torch.manual_seed(cfg.SEED)  # the same initial weights and queue on every process
    m = cfg.MODEL
    groups = split_bn_groups(cfg, world_size)
    if groups > 1:
        logger.info(
            "split BN on: BN statistics over %d sub-batches of %d images per process%s (MODEL.SPLIT_BN_GROUPS)",
            groups,
            cfg.SOLVER.BATCH_SIZE // world_size // groups,
            ", the keys shuffled across them" if m.SHUFFLE_BN else "",
        )
    elif world_size == 1 and m.SHUFFLE_BN:
        logger.info("one process without split BN: shuffle-BN has nothing to shuffle across and is a no-op")
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
        split_bn_groups=groups,
        checkpoint_strong=m.CHECKPOINT_STRONG,
    )
    if m.SYNC_BN:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device, memory_format=memory_format)


def build_optimizer(cfg, model):
    """SGD on the query encoder (the key encoder follows it by momentum), fused on a GPU."""
    s = cfg.SOLVER
    cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.SGD(
        model.encoder_q.parameters(),
        lr=s.BASE_LR,
        momentum=s.MOMENTUM,
        weight_decay=s.WEIGHT_DECAY,
        fused=True if cuda else None,
    )


def _compile(model, view_set):
    # The encoders are compiled, not the DDP module: the forward between them holds shuffle-BN's
    # collectives and the queue's in-place update, which would break the graph. One graph per view
    # size, twice for strong views under MODEL.CHECKPOINT_STRONG: raise dynamo's limit to fit them,
    # or it falls back to eager for the rest without an error.
    sizes = {view.size for view in view_set.views.flat()}
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(sizes) + 2)
    model.encoder_q.compile(dynamic=False)
    model.encoder_k.compile(dynamic=False)


def build_training(cfg, resume, rank, world_size, local_rank):
    """Sets up one process: output folder, logging, device, model, optimizer, data, resume, compile, DDP."""
    output_dir = Path(cfg.OUTPUT_DIR)
    project = wandb_project(cfg) if rank == 0 else None
    output_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(output_dir, rank)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed view sizes: the fastest algorithm per size, found once
    amp = cuda and cfg.SOLVER.AMP
    memory_format = torch.channels_last if cuda and cfg.SOLVER.CHANNELS_LAST else torch.contiguous_format
    # A gloo group for the stop vote: it never waits for the GPU.
    control = None if world_size == 1 else (dist.new_group(backend="gloo") if cuda else dist.group.WORLD)
    # Before config.yaml is overwritten: a checkpoint of another run stops here and loses nothing.
    found = _find_resume(resume, output_dir, cfg.dump())
    logger.info(startup_line(cfg.dump()))
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

    model = build_model(cfg, device, memory_format, world_size)
    optimizer = build_optimizer(cfg, model)
    s = cfg.SOLVER
    view_dtype = torch.bfloat16 if amp else torch.float32
    view_set = ViewSet.from_cfg(cfg)
    data = build_data(cfg, view_set, device, rank, world_size, view_dtype=view_dtype, memory_format=memory_format)
    logger.info(
        "views made %s",
        f"in batches on {device.type}" if data.executor == "batched" else "per image in DataLoader workers",
    )
    iters_per_epoch = data.sampler.batches_per_epoch
    if iters_per_epoch == 0:
        raise DatasetError(
            f"DATA.ROOT {cfg.DATA.ROOT} has {len(data.dataset)} images, fewer than one global batch of "
            f"{s.BATCH_SIZE}; lower SOLVER.BATCH_SIZE or add images"
        )
    max_iter = s.MAX_ITER or s.EPOCHS * iters_per_epoch

    start_iter = 0
    if found:
        path, checkpoint = found
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng(checkpoint["rng"])
        start_iter = checkpoint["iteration"] + 1
        logger.info("resumed from %s at iteration %d", path, start_iter)
    if s.COMPILE:
        _compile(model, view_set)
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
    writer = None
    if rank == 0:
        writer = MetricsWriter(output_dir, start_iter, iters_per_epoch, project, yaml.safe_load(cfg.dump()))
    return Training(
        cfg=cfg,
        rank=rank,
        world_size=world_size,
        device=device,
        amp=amp,
        control=control,
        model=model,
        net=net,
        optimizer=optimizer,
        data=data,
        start_iter=start_iter,
        max_iter=max_iter,
        iters_per_epoch=iters_per_epoch,
        checkpoints=CheckpointSchedule(s, iters_per_epoch, max_iter),
        guard=DivergenceGuard(model, device, amp, control, output_dir),
        writer=writer,
        monitor=KnnMonitor(cfg, device, iters_per_epoch, amp) if cfg.KNN.ROOT else None,
    )


def _report(t, window, iteration, lr):
    """Checks for divergence, then logs the window's means to the log, metrics.json and TensorBoard."""
    t.guard.check(iteration)
    batch = t.cfg.SOLVER.BATCH_SIZE
    metrics = {**window.report(t.control, t.world_size, batch), "lr": lr, "skipped_images": t.data.dataset.num_skipped}
    if t.writer:
        t.writer.write(iteration, metrics)
    logger.info(progress_line(metrics, iteration, t.max_iter, t.iters_per_epoch, batch, peak_memory(t.device)))


def train_loop(t, stop):
    """Trains from t.start_iter to t.max_iter, or until `stop` (a StopRequest) is agreed on."""
    if t.monitor and t.start_iter == 0:
        t.monitor.evaluate(t.model.encoder_q, -1, t.writer)
    window = MetricWindow()
    iteration, done = t.start_iter, t.start_iter >= t.max_iter
    t.model.train()
    while not done:
        epoch, start_batch = divmod(iteration, t.iters_per_epoch)
        t.data.sampler.set_epoch(epoch, start_batch)
        t.data.dataset.set_epoch(epoch)
        batches = DeviceBatches(t.data)
        fetch_start = time.perf_counter()
        for views in batches:
            data_time = time.perf_counter() - fetch_start
            lr = learning_rate(t.cfg, iteration, t.iters_per_epoch)
            for group in t.optimizer.param_groups:
                group["lr"] = lr
            out = train_step(t.net, t.optimizer, views, t.amp)
            window.add(out, data_time)
            t.guard.record(out["loss"], iteration)

            last = iteration + 1 == t.max_iter
            reporting = (iteration + 1) % t.cfg.LOG_PERIOD == 0 or last
            if reporting:
                _report(t, window, iteration, lr)
            # Several processes agree on a stop at each report: a vote every step would cost a gloo
            # round trip per step for a signal that comes once a run.
            stopping = stop.agreed(t.control) if t.control is None or reporting else False
            name = t.checkpoints.name(iteration, stopping)
            if name:
                t.save(name, iteration, views)
            if t.monitor and t.monitor.due(iteration, last):
                with batches.paused():  # the monitor forks its loader's workers
                    t.monitor.evaluate(t.model.encoder_q, iteration, t.writer)
            if stopping and not last:
                logger.info("stop signal: saved iteration %d; continue with --resume auto", iteration)
            iteration += 1
            if stopping or last:
                done = True
                break
            fetch_start = time.perf_counter()


def train(cfg, resume, rank, world_size, local_rank):
    """Sets up and runs the training of one process."""
    stop = StopRequest()  # from the start: a signal during set-up stops the run at its first step
    t = build_training(cfg, resume, rank, world_size, local_rank)
    run_start = time.perf_counter()
    train_loop(t, stop)
    if t.monitor:
        seconds = t.monitor.seconds
        logger.info(
            "kNN monitor: %.0f s, %.1f%% of the run", seconds, 100 * seconds / (time.perf_counter() - run_start)
        )
    if t.data.dataset.num_skipped:
        logger.warning(
            "%d reads of unreadable images were skipped (see the warnings above)", t.data.dataset.num_skipped
        )
    if t.writer:
        t.writer.close()
