"""`make demo`: the whole suite end to end on the built-in synthetic data sets, on a laptop CPU.

    python tools/demo.py [--output-dir demo_output]

1. writes the synthetic ImageNet / VOC / COCO data sets (tools/make_synthetic_data.py, size small);
2. pretrains CLSA-Single (ResNet-50) for a few iterations on the synthetic ImageFolder set, with small
   crops so that it takes about a minute on 2 cores: too few iterations to learn anything, so it names
   the check that does show learning (`make learning-check`) instead of scoring its own weights;
3. runs tools/run_suite.py --profile smoke on the checkpoint: conversion, VOC07 SVM and linear
   classification (frozen features, and the CLSA reference protocol at 32 px for 2 epochs), VOC07+12
   Faster R-CNN, COCO Mask R-CNN (tiny schedules and inputs), the report.

Every step is skipped when its output exists, so a second `make demo` reuses what is done. The numbers
are smoke-scale numbers on synthetic data: they show that each stage runs and is wired to its metric,
not what the paper reports.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from common.cli import entry_parser, exit_on_user_error
from common.synthetic import generate

REPO = Path(__file__).resolve().parent.parent

# CLSA-Single with the paper's losses and view structure, at crop sizes a CPU gets through quickly.
PRETRAIN_OVERRIDES = [
    "DATA.KEY_VIEW",
    "[64, 0.2, 1.0]",
    "DATA.WEAK_VIEWS",
    "[[64, 0.2, 1.0]]",
    "DATA.STRONG_VIEWS",
    "[[32, 0.086, 0.429]]",
    "SOLVER.BATCH_SIZE",
    "16",
    "MODEL.QUEUE_SIZE",
    "256",
    "SOLVER.MAX_ITER",
    "6",
    "DATA.NUM_WORKERS",
    "1",
    "LOG_PERIOD",
    "2",
]


def step(number, total, title):
    print(f"\n[demo] {number}/{total} {title}", flush=True)


def main(argv=None):
    parser = entry_parser(__doc__)
    parser.add_argument(
        "--output-dir", "--out", type=Path, default=Path("demo_output"), help="data sets, checkpoints and results"
    )
    parser.add_argument("--size", default="small", choices=["tiny", "small"], help="synthetic data set size")
    args = parser.parse_args(argv)
    out = args.output_dir.resolve()
    start = time.time()
    env = {**os.environ, "DETECTRON2_DATASETS": str(out / "datasets")}

    step(1, 3, f"synthetic data sets ({args.size}) -> {out / 'datasets'}")
    generate(out / "datasets", seed=0, size=args.size)

    pretrain_dir = out / "pretrain"
    step(
        2,
        3,
        f"CLSA-Single pretraining (ResNet-50, {PRETRAIN_OVERRIDES[PRETRAIN_OVERRIDES.index('SOLVER.MAX_ITER') + 1]}"
        f" iterations, small crops) -> {pretrain_dir}",
    )
    if (pretrain_dir / "model_final.pth").is_file():
        print(f"[demo] {pretrain_dir / 'model_final.pth'} exists, skipped")
    else:
        subprocess.run(
            [
                sys.executable,
                str(REPO / "pretrain/main.py"),
                "--config-file",
                str(REPO / "pretrain/configs/clsa_single.yaml"),
                "--resume",
                "auto",
                "DATA.ROOT",
                str(out / "datasets" / "imagenet" / "train"),
                "OUTPUT_DIR",
                str(pretrain_dir),
                *PRETRAIN_OVERRIDES,
            ],
            check=True,
            env=env,
            cwd=REPO,
        )
    print(
        f"[demo] {PRETRAIN_OVERRIDES[PRETRAIN_OVERRIDES.index('SOLVER.MAX_ITER') + 1]} iterations show that "
        "pretraining runs, not that it learns: `make learning-check` shows that (its recorded results: "
        'benchmarks.md, "The learning check")'
    )

    step(3, 3, "transfer suite (smoke profile) and the Table-3 report")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/run_suite.py"),
            "--weights",
            str(pretrain_dir),
            "--output-dir",
            str(out / "suite" / "clsa_single_demo"),
            "--profile",
            "smoke",
            "--seeds",
            "1",
        ],
        check=True,
        env=env,
        cwd=REPO,
    )
    print(
        f"\n[demo] done in {time.time() - start:.0f} s (set-up not included). These are smoke-scale numbers "
        f"on synthetic data, not paper reproductions; report: {out / 'suite' / 'clsa_single_demo' / 'report.md'}"
    )


if __name__ == "__main__":
    exit_on_user_error(main)
