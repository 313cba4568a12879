"""Runs the whole transfer protocol for one checkpoint, then prints the Table-3 report.

    python tools/run_suite.py --weights CKPT_OR_PRETRAIN_DIR --out suite/ckptname
    python tools/run_suite.py --weights CKPT --out DIR --only voc_det,coco_det --seeds 5

Stages, in order: convert (converters/to_d2.py), voc07_svm, voc07_linear, voc07_clsa (the CLSA
reference's VOC07 protocol), imagenet_linear and imagenet_knn (only with --imagenet), voc_det,
coco_det, report. Each stage writes OUT/<stage>/ (its log.txt and results.json). A stage that
finished for the same checkpoint (sha256), data (root and a fingerprint of the split files) and
command is skipped, so an interrupted suite resumes; an OUT that holds results of another checkpoint
or other data is refused before any stage writes; a failed stage leaves OUT/<stage>/FAILED and the
others still run.
Data sets: $DETECTRON2_DATASETS (VOC2007/, VOC2012/, coco/), as for detectron2.
`--profile smoke` shrinks every schedule and input size so the suite runs on a laptop CPU in minutes;
its numbers only test the pipeline.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import slurm
from common.cli import at_least, exit_on_user_error, one_line_errors
from common.datasets import DETECTRON2_SPLITS, IMAGENET_SPLITS, detectron2_datasets_root
from common.errors import CheckpointError
from common.io import atomic_write_json, fingerprint_files, sha256_file
from common.records import check_record
from pretrain.run_state import find_resume_checkpoint

REPO = Path(__file__).resolve().parent.parent
STAGES = (
    "convert",
    "voc07_svm",
    "voc07_linear",
    "voc07_clsa",
    "imagenet_linear",
    "imagenet_knn",
    "voc_det",
    "coco_det",
    "report",
)
DEFAULT_STAGES = ("convert", "voc07_svm", "voc07_linear", "voc07_clsa", "voc_det", "coco_det", "report")
STAMP = "stage.json"


# Overrides that make each stage a CPU smoke test (tiny inputs, few iterations, few RoIs).
_SMOKE_DETECTION = [
    "MODEL.DEVICE",
    "cpu",
    "SOLVER.REFERENCE_WORLD_SIZE",
    "0",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.BASE_LR",
    "0.01",
    "SOLVER.MAX_ITER",
    "20",
    "SOLVER.STEPS",
    "(15,)",
    "SOLVER.WARMUP_ITERS",
    "5",
    "SOLVER.CHECKPOINT_PERIOD",
    "1000",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "192",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "128",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "300",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "32",
    "TEST.PRECISE_BN.NUM_ITER",
    "4",
    "DATALOADER.NUM_WORKERS",
    "0",
]
SMOKE_ARGS = {
    "voc07_svm": ["--costs", "0.1", "1", "10"],
    "voc07_linear": ["--epochs", "20"],
    "voc07_clsa": ["--epochs", "2", "--crop-size", "32", "--resize", "36", "--workers", "0"],
    "imagenet_linear": ["--epochs", "2", "--batch-size", "32"],
    "imagenet_knn": ["--batch-size", "32", "--crop-size", "64", "--workers", "2"],
    "voc_det": _SMOKE_DETECTION,
    "coco_det": _SMOKE_DETECTION,
}


def resolve_weights(path):
    """A checkpoint file, or a pretraining output folder's newest readable checkpoint (as --resume auto
    finds it); CheckpointError if there is none."""
    path = Path(path)
    if path.is_dir():
        found = find_resume_checkpoint(path)
        if found is None:
            raise CheckpointError(path, "holds no checkpoint; pass a checkpoint file or a pretraining OUTPUT_DIR")
        path = found[0]
    if not path.is_file():
        raise CheckpointError(path, "no such file; pass a checkpoint file or a pretraining OUTPUT_DIR")
    return path.resolve()


def stage_command(stage, args, weights, d2_weights, out):
    py = [sys.executable]
    smoke = SMOKE_ARGS.get(stage, []) if args.profile == "smoke" else []
    if stage == "convert":
        return py + [str(REPO / "converters/to_d2.py"), str(weights), str(d2_weights)]
    if stage in ("voc07_svm", "voc07_linear"):
        # Both VOC07 stages read the same frozen features: one cache, one extraction.
        return (
            py
            + [
                str(REPO / f"transfer/{stage}.py"),
                "--weights",
                str(weights),
                "--output-dir",
                str(out),
                "--cache-dir",
                str(args.out / "features"),
            ]
            + smoke
        )
    if stage == "voc07_clsa":
        # One process: its batch of 16 gains little from more GPUs (torchrun runs it on several by hand).
        return (
            py
            + [
                str(REPO / "transfer/voc07_linear.py"),
                "--protocol",
                "clsa",
                "--weights",
                str(weights),
                "--output-dir",
                str(out),
            ]
            + smoke
        )
    if stage in ("imagenet_linear", "imagenet_knn"):
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={max(1, args.num_gpus)}"]
        script = "transfer/imagenet_linear.py" if stage == "imagenet_linear" else "transfer/knn.py"
        return (
            launcher
            + [str(REPO / script), "--weights", str(weights), "--data", str(args.imagenet), "--output-dir", str(out)]
            + smoke
        )
    if stage in ("voc_det", "coco_det"):
        config = "detection/voc0712_R50_C4.yaml" if stage == "voc_det" else "detection/coco_R50_C4.yaml"
        seeds = args.seeds if stage == "voc_det" else 1
        return (
            py
            + [
                str(REPO / "tools/train_net.py"),
                "--config-file",
                str(REPO / config),
                "--num-gpus",
                str(max(1, args.num_gpus)),
                "--seeds",
                str(seeds),
                "MODEL.WEIGHTS",
                str(d2_weights),
                "OUTPUT_DIR",
                str(out),
            ]
            + smoke
        )
    if stage == "report":
        return py + [str(REPO / "tools/report.py"), str(args.out)]
    raise ValueError(stage)


def run_stage(stage, cmd, out, stamp):
    """Runs one stage with its output in out/log.txt; returns True on success."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "FAILED").unlink(missing_ok=True)
    start = time.time()
    print(f"[suite] {stage}: running, log {out / 'log.txt'}", flush=True)
    # Line-buffered here and unbuffered in the stage, so that `tail -f log.txt` follows it live.
    with open(out / "log.txt", "w", buffering=1) as log:
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        last = ""
        # One live status line on a terminal; in a log file that would be a line per update.
        live = sys.stdout.isatty()
        try:
            for line in proc.stdout:
                log.write(line)
                if stage == "report":
                    print(line, end="")
                elif line.strip():
                    last = line.strip()
                    if live:
                        print(f"\r[suite] {stage}: {last[:100]:<100}", end="", flush=True)
        except KeyboardInterrupt:
            stop(proc)
            (out / "FAILED").write_text("interrupted (Ctrl-C)\n")
            raise
        code = proc.wait()
    seconds = time.time() - start
    if code != 0:
        tail = (out / "log.txt").read_text().strip().splitlines()[-12:]
        (out / "FAILED").write_text(f"exit code {code}: {last}\n")
        print(
            f"\n[suite] {stage}: FAILED (exit {code}) after {seconds:.0f} s; log {out / 'log.txt'}:\n  "
            + "\n  ".join(tail),
            flush=True,
        )
        return False
    atomic_write_json({**stamp, "seconds": round(seconds, 1)}, out / STAMP)
    if stage != "report":
        done = f"[suite] {stage}: done in {seconds:.0f} s"
        print(f"\r{done:<120}" if live else done, flush=True)
    return True


def stop(proc, grace=30):
    """Ends a stage's process: SIGTERM (a pretraining or torchrun stage saves and exits), then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stage_is_done(out, stamp):
    """True if out/ holds this stage's results for the same checkpoint, data and command (profile,
    flags); RecordMismatchError if it holds results of another run. Only the keys of `stamp` count."""
    path = out / STAMP
    if not path.is_file():
        return False
    check_record(
        path, json.loads(path.read_text()), stamp, "use another --out, or move that folder away; it is not overwritten"
    )
    return True


def main(argv=None):
    parser = one_line_errors(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )
    parser.add_argument("--weights", required=True, help="checkpoint, or a pretraining OUTPUT_DIR")
    # Absolute, because the stages run from the repository root, not from the caller's folder.
    absolute = lambda path: Path(path).resolve()  # noqa: E731
    parser.add_argument("--out", type=absolute, required=True, help="suite output folder for this checkpoint")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument(
        "--imagenet",
        type=absolute,
        help="ImageNet root with train/ and val/ (enables imagenet_linear and imagenet_knn)",
    )
    parser.add_argument("--seeds", type=at_least(1), default=5, help="VOC detection trials (the protocol averages 5)")
    parser.add_argument("--num-gpus", type=at_least(0), default=None, help="default: all local GPUs")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full")
    slurm.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.slurm:
        if args.nodes != 1:
            parser.error("run_suite runs on one node (its stages start one process per GPU); use --nodes 1")
        # A requeued suite reruns the same command: finished stages are skipped, the others rerun.
        flags, command = slurm.split_argv(sys.argv[1:] if argv is None else argv)
        return slurm.submit(
            flags, slurm.Job("tools.run_suite:main", command, [], task_per_gpu=False), args.out, "clsa-suite"
        )
    if args.num_gpus is None:
        import torch

        args.num_gpus = torch.cuda.device_count()
    stages = args.only.split(",") if args.only else list(DEFAULT_STAGES)
    if args.imagenet and not args.only:
        stages[stages.index("voc_det") : stages.index("voc_det")] = ["imagenet_linear", "imagenet_knn"]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {','.join(STAGES)}")
    for stage in {"imagenet_linear", "imagenet_knn"} & set(stages):
        if not args.imagenet:
            parser.error(f"{stage} needs --imagenet ROOT")

    weights = resolve_weights(args.weights)
    sha = sha256_file(weights)
    d2_weights = args.out / "convert" / "model_d2.pkl"
    # The suite's identity: one checkpoint on one set of data. Every stage folder already in --out is
    # checked against it before any stage writes, so a foreign suite is refused untouched.
    identity = {"weights_sha256": sha, "data": fingerprint_files(detectron2_datasets_root(), DETECTRON2_SPLITS)}
    for stage in STAGES:
        stage_is_done(args.out / stage, identity)
    # The interpreter path is left out of a stamp: the same run from another venv is the same run.
    stamps = {
        stage: {
            "stage": stage,
            **identity,
            "command": stage_command(stage, args, weights, d2_weights, args.out / stage)[1:],
        }
        for stage in stages
    }
    for stage in {"imagenet_linear", "imagenet_knn"} & set(stamps):
        stamps[stage]["imagenet"] = fingerprint_files(args.imagenet, IMAGENET_SPLITS)
    done = {stage: stage != "report" and stage_is_done(args.out / stage, stamps[stage]) for stage in stages}
    print(f"[suite] checkpoint {weights} (sha256 {sha[:12]}...) -> {args.out}; stages: {', '.join(stages)}")
    failed = []
    for stage in stages:
        out = args.out / stage
        cmd = stage_command(stage, args, weights, d2_weights, out)
        stamp = stamps[stage]
        if done[stage]:
            print(f"[suite] {stage}: already done for this checkpoint and data, skipped")
            continue
        if stage in ("voc_det", "coco_det") and not d2_weights.is_file():
            print(f"[suite] {stage}: skipped, no converted weights ({d2_weights}); run the convert stage")
            failed.append(stage)
            continue
        if not run_stage(stage, cmd, out, stamp):
            failed.append(stage)
    if failed:
        # Exit code 1, not 2: the input was fine, a stage failed (a SLURM job ends failed too).
        raise SystemExit(f"[suite] failed stages: {', '.join(failed)} (see their log.txt)")


def cli_main():
    """`python tools/run_suite.py`, and the `clsa-suite` command of an installed package."""
    try:
        exit_on_user_error(main)
    except KeyboardInterrupt:
        sys.exit(
            "\n[suite] interrupted; the stage that was running is stopped and marked FAILED. Run the same "
            "command again to resume"
        )


if __name__ == "__main__":
    cli_main()
