"""Runs the whole transfer protocol for one checkpoint, then prints the Table-3 report.

    python tools/run_suite.py --weights CKPT_OR_PRETRAIN_DIR --out suite/ckptname
    python tools/run_suite.py --weights CKPT --out DIR --only voc_det,coco_det --seeds 5
    python tools/run_suite.py --weights CKPT --out DIR --stage-args voc07_svm="--layer res5_2x2" \
        --stage-args coco_det="SOLVER.IMS_PER_BATCH 8" --coco-schedule 1x
    python tools/run_suite.py --weights CKPT --out DIR --slurm --partition P --slurm-extra qos=high
    python tools/run_suite.py --status DIR

Stages, in order: convert (converters/to_d2.py), voc07_svm, voc07_linear, voc07_clsa (the CLSA
reference's VOC07 protocol), imagenet_linear and imagenet_knn (only with --imagenet), voc_det,
coco_det, report. Each stage writes OUT/<stage>/ (its log.txt and results.json). A stage that
finished for the same checkpoint (sha256), data (root and a fingerprint of the split files) and
command (with its --stage-args) is skipped, so an interrupted suite resumes, also after OUT is moved
or from another clone of the code; an OUT that holds results of another checkpoint or other data is
refused before any stage writes; a failed stage leaves OUT/<stage>/FAILED and the others still run.
With --slurm every stage is a job of its own: the conversion first, the other stages at the same time
once it succeeded, the report once they all did. Run the same command again to submit what is neither
done nor queued or running; --status OUT says which is which.
Data sets: $DETECTRON2_DATASETS (VOC2007/, VOC2012/, coco/), as for detectron2.
`--profile smoke` shrinks every schedule and input size so the suite runs on a laptop CPU in minutes;
its numbers only test the pipeline.
"""

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common import slurm
from common.backbone import load_backbone
from common.cli import at_least, entry_parser, exit_on_user_error
from common.datasets import DETECTRON2_SPLITS, IMAGENET_SPLITS, detectron2_datasets_root
from common.errors import CheckpointError, RecordMismatchError, UserError
from common.io import atomic_write_json, fingerprint_files, sha256_file
from common.locking import output_lock
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
JOBS = Path("slurm") / "jobs.json"  # under OUT: the SLURM job of each stage, by --slurm
COCO_CONFIGS = {"2x": "detection/coco_R50_C4.yaml", "1x": "detection/coco_R50_C4_1x.yaml"}
# The first detectron2 config key in a detection stage's --stage-args starts its overrides.
_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


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
    """A checkpoint file whose backbone every stage can read, or a pretraining output folder's newest
    readable checkpoint (as --resume auto finds it); CheckpointError if there is none."""
    path = Path(path)
    if path.is_dir():
        found = find_resume_checkpoint(path)
        if found is None:
            raise CheckpointError(path, "holds no checkpoint; pass a checkpoint file or a pretraining OUTPUT_DIR")
        path = found[0]
    if not path.is_file():
        raise CheckpointError(path, "no such file; pass a checkpoint file or a pretraining OUTPUT_DIR")
    if not os.access(path, os.R_OK):
        raise CheckpointError(path, "cannot be read (permission denied); make it readable")
    load_backbone(path)  # the one reader of every stage: a file it refuses is refused once, here
    return path.resolve()


def parse_stage_args(text):
    """argparse type of --stage-args: 'STAGE=ARGS' -> (stage, [args], split as a shell would)."""
    stage, sep, words = text.partition("=")
    if not sep or stage not in STAGES:
        raise argparse.ArgumentTypeError(f'{text!r} is not STAGE="ARGS" with STAGE one of {",".join(STAGES)}')
    try:
        return stage, shlex.split(words)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error


def stage_command(stage, args, weights, d2_weights, out):
    """The stage's command line: its script's, then the profile's and then its --stage-args (a later
    flag or detectron2 override wins over an earlier one)."""
    extra = args.stage_args.get(stage, [])
    flags, overrides = extra, []
    if stage in ("voc_det", "coco_det"):
        # train_net takes every word after the first config key as an override: flags go before.
        first = next((i for i, word in enumerate(extra) if _CONFIG_KEY.fullmatch(word)), len(extra))
        flags, overrides = extra[:first], extra[first:]
    return _script_command(stage, args, weights, d2_weights, out, flags) + overrides


def _script_command(stage, args, weights, d2_weights, out, extra):
    py = [sys.executable]
    smoke = SMOKE_ARGS.get(stage, []) if args.profile == "smoke" else []
    if stage == "convert":
        return py + [str(REPO / "converters/to_d2.py"), str(weights), str(d2_weights)] + extra
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
            + extra
        )
    if stage == "voc07_clsa":
        # A plain `python`: the launcher starts one process per visible GPU, and the batch of 16 is their total.
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
            + extra
        )
    if stage in ("imagenet_linear", "imagenet_knn"):
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={max(1, args.num_gpus)}"]
        script = "transfer/imagenet_linear.py" if stage == "imagenet_linear" else "transfer/knn.py"
        return (
            launcher
            + [str(REPO / script), "--weights", str(weights), "--data", str(args.imagenet), "--output-dir", str(out)]
            + smoke
            + extra
        )
    if stage in ("voc_det", "coco_det"):
        config = "detection/voc0712_R50_C4.yaml" if stage == "voc_det" else COCO_CONFIGS[args.coco_schedule]
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
                *extra,
                "MODEL.WEIGHTS",
                str(d2_weights),
                "OUTPUT_DIR",
                str(out),
            ]
            + smoke
        )
    if stage == "report":
        # The checkpoint's folder is its pretraining OUTPUT_DIR: the report draws its curves from there.
        return py + [str(REPO / "tools/report.py"), str(args.out), "--pretrain-dir", str(weights.parent)] + extra
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
        (out / "FAILED").write_text(f"exit code {code}: {last_line(out / 'log.txt')}\n")
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


def portable(words, weights, out):
    """A stage's command after its interpreter (the same run from another venv is the same run), as
    its stamp records it: scripts relative to the repository, the checkpoint as $WEIGHTS (its sha256
    is recorded beside), its folder as $WEIGHTS_FOLDER and output paths under $OUT. A suite moved
    elsewhere, or resumed from another clone, then has the same stamps. Older stamps, which hold
    absolute paths, read the same as long as those paths are this clone's, this checkpoint's and
    this OUT's."""

    def word(arg):
        if arg == str(weights):
            return "$WEIGHTS"
        if arg == str(weights.parent):
            return "$WEIGHTS_FOLDER"
        for root, name in ((out, "$OUT"), (REPO, None)):
            if arg.startswith(f"{root}{os.sep}"):
                relative = arg[len(str(root)) + 1 :]
                return f"{name}/{relative}" if name else relative
        return "$OUT" if arg == str(out) else arg

    return [word(arg) for arg in words]


def stage_is_done(out, stamp, weights=None, suite=None):
    """True if out/ holds this stage's results for the same checkpoint, data and command (profile,
    flags); RecordMismatchError if it holds results of another run. Only the keys of `stamp` count;
    a recorded command is read through `portable` with this run's `weights` and `suite` folder."""
    path = out / STAMP
    if not path.is_file():
        return False
    saved = json.loads(path.read_text())
    if isinstance(saved, dict) and isinstance(saved.get("command"), list) and suite is not None:
        saved["command"] = portable(saved["command"], weights, suite)
    check_record(path, saved, stamp, "use another --output-dir, or move that folder away; it is not overwritten")
    return True


def _is_done(stage, suite, stamp, weights):
    """stage_is_done; a report written by another command is not done rather than foreign: it is
    rewritten from the stages' results, which loses nothing."""
    try:
        return stage_is_done(suite / stage, stamp, weights, suite)
    except RecordMismatchError:
        if stage != "report":
            raise
        return False


def last_line(path):
    """A log's last `error:` line (an entry point's one-line refusal), else its last line."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")


def recorded_jobs(out):
    """{stage: {"job_id", "cluster"}} of the jobs --slurm submitted for the suite in `out`."""
    path = out / JOBS
    return json.loads(path.read_text()) if path.is_file() else {}


def stage_state(out, stage, job):
    """One stage's state in words: done, queued or running (a job of --slurm), failed with its log's
    last line, started without a result yet, or not started."""
    folder = out / stage
    if job is not None:
        state = slurm.job_state(slurm.recorded_job(job["cluster"], out, job["job_id"]))
        if state != "ended":
            return f"{state} (job {job['job_id']})"
    if (folder / "FAILED").is_file():
        log = folder / "log.txt"
        return f"failed: {last_line(log if log.is_file() else folder / 'FAILED')}"
    if (folder / STAMP).is_file():
        return "done"
    if (folder / "log.txt").is_file():
        # A stage run here (without --slurm) that is still running, or that was killed.
        return f"started, no result yet: {last_line(folder / 'log.txt')}"
    return "not started" + (f" (job {job['job_id']} ended)" if job is not None else "")


def print_status(out):
    if not out.is_dir():
        raise UserError(f"{out}: no such folder; pass a run_suite --out folder")
    jobs = recorded_jobs(out)
    stages = [stage for stage in STAGES if stage in jobs or (out / stage).is_dir()]
    if not stages:
        raise UserError(f"{out}: holds no stage of run_suite; pass a run_suite --out folder")
    for stage in stages:
        print(f"{stage:<16} {stage_state(out, stage, jobs.get(stage))}")


def submit_suite(args, flags, command, stages, done, weights):
    """Submits each stage that is neither done nor queued or running as a job of its own: the
    conversion first, the other stages once it succeeded, the report once they all did. Records the
    job ids in OUT/slurm/jobs.json; returns {stage: job submitted}."""
    jobs = recorded_jobs(args.out)
    active, submitted = {}, {}
    for stage in stages:
        if stage == "report" and active:
            done[stage] = False  # the stages it reports on change
        if done[stage]:
            print(f"[suite] {stage}: already done for this checkpoint and data, skipped")
            continue
        if stage in jobs:
            job = slurm.recorded_job(jobs[stage]["cluster"], args.out, jobs[stage]["job_id"])
            state = slurm.job_state(job)
            if state != "ended":
                print(f"[suite] {stage}: still {state} as job {job.job_id}, not submitted again")
                active[stage] = job
                continue
        after = list(active.values()) if stage == "report" else [active["convert"]] if "convert" in active else []
        argv = [*command, "--weights", str(weights), "--output-dir", str(args.out), "--only", stage]
        job = slurm.Job("tools.run_suite:main", argv, [], task_per_gpu=False)
        # Converting and reporting need no GPU.
        gpus = 0 if stage in ("convert", "report") else None
        print(f"[suite] {stage}: ", end="")
        active[stage] = submitted[stage] = slurm.submit(flags, job, args.out, f"clsa-{stage}", after, gpus)
        jobs[stage] = {"job_id": active[stage].job_id, "cluster": flags.slurm_cluster}
        atomic_write_json(jobs, args.out / JOBS)
    return submitted


def main(argv=None):
    parser = entry_parser(__doc__, announce=lambda parsed: not parsed.status)
    parser.add_argument("--weights", help="checkpoint, or a pretraining OUTPUT_DIR")
    # Absolute, because the stages run from the repository root, not from the caller's folder.
    absolute = lambda path: Path(path).resolve()  # noqa: E731
    parser.add_argument(
        "--output-dir", "--out", dest="out", type=absolute, help="suite output folder for this checkpoint"
    )
    parser.add_argument(
        "--status", type=absolute, metavar="OUT", help="print the state of each stage of the suite in OUT, and exit"
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument(
        "--imagenet",
        type=absolute,
        help="ImageNet root with train/ and val/ (enables imagenet_linear and imagenet_knn)",
    )
    parser.add_argument("--seeds", type=at_least(1), default=5, help="VOC detection trials (the protocol averages 5)")
    parser.add_argument("--num-gpus", type=at_least(0), default=None, help="default: all local GPUs")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full")
    parser.add_argument(
        "--stage-args",
        type=parse_stage_args,
        action="append",
        default=[],
        metavar='STAGE="ARGS"',
        help='flags or detectron2 overrides for one stage, repeatable: voc07_svm="--layer res5_2x2", '
        'coco_det="SOLVER.IMS_PER_BATCH 8"; they are part of the stage\'s record',
    )
    parser.add_argument(
        "--coco-schedule",
        choices=sorted(COCO_CONFIGS),
        default="2x",
        help="coco_det's schedule: 2x (180k iterations, the paper's; default) or 1x (90k)",
    )
    slurm.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.status:
        return print_status(args.status)
    for name in ("weights", "out"):
        if getattr(args, name) is None:
            parser.error(f"--{name.replace('out', 'output-dir')} is required (or --status OUT)")
    if args.slurm and args.nodes != 1:
        parser.error("run_suite runs each stage on one node (a stage starts one process per GPU); use --nodes 1")
    if args.num_gpus is None:
        import torch

        # A job's stages use its node's GPUs; the submitting machine may have none.
        args.num_gpus = args.gpus_per_node if args.slurm else torch.cuda.device_count()
    stage_args = {}
    for stage, words in args.stage_args:
        stage_args.setdefault(stage, []).extend(words)
    args.stage_args = stage_args
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
    # One suite run per --out: a run of all its stages, or the submission of their jobs, holds it. The
    # jobs' own runs (--only STAGE) run side by side; each stage's script holds its stage folder.
    with output_lock(args.out) if not args.only else contextlib.nullcontext():
        return _run(args, stages, weights, argv)


def _run(args, stages, weights, argv):
    """The suite of `stages` for the checkpoint `weights` in args.out: checked, then run or submitted."""
    sha = sha256_file(weights)
    d2_weights = args.out / "convert" / "model_d2.pkl"
    # The suite's identity: one checkpoint on one set of data. Every stage folder already in --out is
    # checked against it before any stage writes, so a foreign suite is refused untouched.
    identity = {"weights_sha256": sha, "data": fingerprint_files(detectron2_datasets_root(), DETECTRON2_SPLITS)}
    for stage in STAGES:
        stage_is_done(args.out / stage, identity)
    commands = {stage: stage_command(stage, args, weights, d2_weights, args.out / stage) for stage in stages}
    stamps = {
        stage: {"stage": stage, **identity, "command": portable(commands[stage][1:], weights, args.out)}
        for stage in stages
    }
    for stage in {"imagenet_linear", "imagenet_knn"} & set(stamps):
        stamps[stage]["imagenet"] = fingerprint_files(args.imagenet, IMAGENET_SPLITS)
    done = {stage: _is_done(stage, args.out, stamps[stage], weights) for stage in stages}
    if args.slurm:
        if (args.out / "report" / "FAILED").is_file():  # a report that failed after an earlier one
            done["report"] = False
        flags, command = slurm.split_argv(sys.argv[1:] if argv is None else argv)
        return submit_suite(args, flags, [*command, "--num-gpus", str(args.num_gpus)], stages, done, weights)
    done["report"] = False  # the report is cheap and prints the table: it always runs here
    print(f"[suite] checkpoint {weights} (sha256 {sha[:12]}...) -> {args.out}; stages: {', '.join(stages)}")
    failed = []
    for stage in stages:
        out = args.out / stage
        if done[stage]:
            print(f"[suite] {stage}: already done for this checkpoint and data, skipped")
            continue
        if stage in ("voc_det", "coco_det") and not d2_weights.is_file():
            print(f"[suite] {stage}: skipped, no converted weights ({d2_weights}); run the convert stage")
            failed.append(stage)
            continue
        if not run_stage(stage, commands[stage], out, stamps[stage]):
            failed.append(stage)
    if failed:
        # Exit code 1, not 2: the input was fine, a stage failed (a SLURM job ends failed too).
        raise SystemExit(f"[suite] failed stages: {', '.join(failed)} (see their log.txt)")


def _main_telling_how_to_resume():
    try:
        return main()
    except KeyboardInterrupt:
        print("\n[suite] the stage that was running is stopped and marked FAILED; the same command resumes")
        raise


def cli_main():
    """`python tools/run_suite.py`, and the `clsa-suite` command of an installed package."""
    exit_on_user_error(_main_telling_how_to_resume)


if __name__ == "__main__":
    cli_main()
