"""Detection transfer with detectron2: fine-tune and evaluate a converted backbone.

    python tools/train_net.py --config detection/voc0712_R50_C4.yaml --num-gpus 8 MODEL.WEIGHTS ckpt.pkl
    python tools/train_net.py --config detection/coco_R50_C4.yaml --num-gpus 8 MODEL.WEIGHTS ckpt.pkl
    python tools/train_net.py --config detection/voc0712_R50_C4.yaml --seeds 5 MODEL.WEIGHTS ckpt.pkl

Data sets come from $DETECTRON2_DATASETS under detectron2's builtin names. OUTPUT_DIR receives
detectron2's usual files plus results.json (bbox/segm AP, AP50, AP75, APs, APm, APl, the config,
the weights and their sha256, the seed and the iteration count). With --seeds N each trial runs in
OUTPUT_DIR/seed_K and OUTPUT_DIR/results.json holds their mean and std.
"""

import contextlib
import logging
import os
import subprocess
import sys
import weakref

import common  # noqa: F401  (before detectron2: quiets fvcore's import-time warning)

# isort: split
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import detection  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from common import distributed, slurm
from common.cli import at_least, exit_on_user_error, one_line_errors
from common.config_files import merge_config
from common.errors import ConfigError
from common.io import atomic_write_json, writing_into
from common.locking import output_lock
from detection.datasets import check_datasets
from detection.evaluation import build_evaluator
from detection.pretrained_weights import PretrainedWeightsCheckpointer, check_weights_file
from detection.results import aggregate_trials, build_results, trial_is_done

logger = logging.getLogger("detectron2")


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        # Loading goes through this one, which refuses weights that match no backbone; the
        # PeriodicCheckpointer hook built by DefaultTrainer keeps detectron2's, which saves the same way.
        self.checkpointer = PretrainedWeightsCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))


def load_cfg(args):
    """The merged config; ConfigError for a missing file, an unknown key or a misplaced option."""
    return merge_config(
        get_cfg(), args.config_file, args.opts, lambda _: "detectron2's keys are in detectron2/config/defaults.py"
    )


def with_one_seed(args):
    """`args` with SEED fixed when the config leaves it random (< 0), before `launch` starts the
    processes: then all of them share one seed, and results.json records the one the run used."""
    if load_cfg(args).SEED < 0:
        args.opts = [*args.opts, "SEED", str(int.from_bytes(os.urandom(2), "little"))]
    return args


def setup(args):
    cfg = load_cfg(args)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def check_inputs(args):
    """Every mistake a user can fix (a missing or damaged data set, missing or unconverted weights), as
    a UserError, before detectron2 builds anything or writes to OUTPUT_DIR."""
    cfg = load_cfg(args)
    check_datasets(cfg.DATASETS.TEST if args.eval_only else cfg.DATASETS.TRAIN + cfg.DATASETS.TEST)
    weights = cfg.MODEL.WEIGHTS
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if weights and "://" not in weights and not resuming:
        if not os.path.isfile(weights):
            raise ConfigError(
                f"MODEL.WEIGHTS {weights} does not exist; convert a pretraining checkpoint "
                "with python converters/to_d2.py CKPT and pass the .pkl it writes",
            )
        check_weights_file(weights)


def main(args):
    cfg = setup(args)
    # A full or read-only OUTPUT_DIR met by detectron2's own writers is one line naming it.
    with writing_into(cfg.OUTPUT_DIR):
        return _train_and_test(cfg, args)


def _train_and_test(cfg, args):
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the backbone starts from RANDOM INIT, not pretrained weights")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        PretrainedWeightsCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        iterations = None
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results = trainer._last_eval_results
        iterations = trainer.max_iter
    if comm.is_main_process():
        verify_results(cfg, results)
        summary = build_results(cfg, args.config_file, results, iterations)
        atomic_write_json(summary, os.path.join(cfg.OUTPUT_DIR, "results.json"))
        logger.info("wrote %s", os.path.join(cfg.OUTPUT_DIR, "results.json"))
    return results


def run_seeds(args, argv):
    """Runs args.seeds trials, each in its own process and OUTPUT_DIR/seed_K, then aggregates them."""
    cfg = load_cfg(args)
    base_seed = max(cfg.SEED, 0)
    trial_dirs = []
    for k in range(args.seeds):
        out = os.path.join(cfg.OUTPUT_DIR, f"seed_{base_seed + k}")
        trial_dirs.append(out)
        if trial_is_done(os.path.join(out, "results.json"), cfg, args.config_file):
            print(f"[train_net] trial {k + 1}/{args.seeds} already done in {out}", flush=True)
            continue
        cmd = [sys.executable, __file__, *_without_seeds(argv), "SEED", str(base_seed + k), "OUTPUT_DIR", out]
        print(f"[train_net] trial {k + 1}/{args.seeds}: seed {base_seed + k} -> {out}", flush=True)
        subprocess.run(cmd, check=True)
    summary = aggregate_trials([os.path.join(d, "results.json") for d in trial_dirs])
    atomic_write_json(summary, os.path.join(cfg.OUTPUT_DIR, "results.json"))
    print(f"[train_net] mean and std of {args.seeds} trials -> {cfg.OUTPUT_DIR}/results.json")


def _without_seeds(argv):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--seeds":
            skip = True
        elif not a.startswith("--seeds="):
            out.append(a)
    return out


def parse_args(argv=None):
    parser = one_line_errors(default_argument_parser())
    parser.add_argument("--seeds", type=at_least(1), default=1, help="number of trials with seeds SEED, SEED+1, ...")
    slurm.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.num_gpus < 1:  # detectron2's own flag, parsed as any int
        parser.error(f"argument --num-gpus: must be at least 1, got {args.num_gpus}")
    return args


def launch_args(args):
    """(GPUs per machine, machines, machine rank, dist url) of detectron2's launch: its own flags for
    a plain `python`; under srun, submitit or torchrun, this task's place as common.distributed
    detects it (one task per node, which starts a process per GPU)."""
    plan = distributed.detect()
    if plan.mode in ("spawn", "single process"):
        return args.num_gpus, args.num_machines, args.machine_rank, args.dist_url
    if plan.world_size != plan.nodes * plan.processes:
        raise ConfigError(
            f"{plan.mode}: {plan.world_size} tasks on {plan.nodes} node(s); tools/train_net.py runs one task "
            "per node (detectron2's launch starts a process per GPU), e.g. srun --ntasks-per-node 1"
        )
    print(plan.describe(), flush=True)
    dist_url = f"tcp://{plan.master_addr}:{plan.master_port}"
    return plan.processes, plan.nodes, plan.first_rank // plan.processes, dist_url


def run_argv(argv):
    """The command line `argv`, run as __main__ runs it."""
    args = parse_args(argv)
    output_dir = load_cfg(args).OUTPUT_DIR
    if args.seeds > 1:
        with output_lock(output_dir):  # each trial's own run holds its seed_K folder
            run_seeds(args, argv)
        return
    num_gpus, num_machines, machine_rank, dist_url = launch_args(args)
    # One run per OUTPUT_DIR: the first machine's launcher holds it for all of the run's processes.
    with output_lock(output_dir) if machine_rank == 0 else contextlib.nullcontext():
        launch(
            main,
            num_gpus,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=(with_one_seed(args),),
        )


def cli_main():
    """`python tools/train_net.py`, and the `clsa-train-net` command of an installed package."""
    args = parse_args()
    exit_on_user_error(check_inputs, args)
    if args.slurm:
        flags, argv = slurm.split_argv(sys.argv[1:])
        # detectron2's --resume continues from OUTPUT_DIR's last_checkpoint.
        slurm.submit(
            flags,
            slurm.Job("tools.train_net:run_argv", argv, ["--resume"], task_per_gpu=False),
            load_cfg(args).OUTPUT_DIR,
            "clsa-detection",
        )
    else:
        exit_on_user_error(run_argv, sys.argv[1:])


if __name__ == "__main__":
    cli_main()
