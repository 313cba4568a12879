"""Shows that pretraining learns: kNN top-1 of short CPU runs against the same network at random init.

    python tools/learning_check.py                       # CLSA-Single on both shapes variants, seed 0
    python tools/learning_check.py --method mocov2       # MoCo v2, the same recipe without the strong view
    python tools/learning_check.py --method clsa mocov2 --seed 0 1 2 --jobs 2   # the benchmarks.md table
    python tools/learning_check.py --method mocov2 --output-dir lc_3000 -- SOLVER.EPOCHS 200   # overrides

Each run writes its shapes set (ten classes told apart by shape alone, pretrain.learning_check) to
OUT/data/seed_<k>, pretrains with pretrain/configs/cpu/learning_check[_mocov2].yaml into
OUT/<method>/<variant>/seed_<k>, and reads the kNN monitor's top-1 (k = 20) on the val split before
the first step, every 250 steps and after the last. Prints one line per run, then a markdown table
of every run and the mean gain of each method on each variant, CLSA's against MoCo v2's. Exit code 1
when a run gains less than pretrain.learning_check.MARGIN points. A second call reuses finished runs
of the same recipe.
Config overrides (KEY VALUE, after `--` when they follow a list such as --seed) apply to every run; a
grid with other overrides needs its own --output-dir. With --jobs N, N runs at a time, each on its share of the cores.
"""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

from common.cli import at_least, entry_parser, exit_on_user_error
from pretrain.learning_check import MARGIN, RECIPES, RESULT, VARIANTS, recipe_config, run, run_folder

REPO = Path(__file__).resolve().parent.parent


def _run_alone(args, method, variant, seed, threads):
    """One run in its own process with `threads` threads; its result as run() wrote it. A finished
    run is read back here, leaving its log as it was."""
    if (run_folder(args.output_dir, method, variant, seed) / RESULT).is_file():
        return run(args.output_dir, method, variant, seed, args.opts)
    command = [sys.executable, __file__, "--output-dir", str(args.output_dir), "--method", method]
    command += ["--variant", variant, "--seed", str(seed), "--", *args.opts]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log = run_folder(args.output_dir, method, variant, seed) / "stdout.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode not in (0, 1):
        raise SystemExit(f"error: the run {method} {variant} seed {seed} failed; its output is in {log}")
    return run(args.output_dir, method, variant, seed, args.opts)


def _curve(result):
    return " / ".join(f"{top1:.1f}" for _, top1 in result["curve"])


def _line(result):
    return (
        f"{result['method']} {result['variant']} seed {result['seed']}: kNN top-1 (k=20) {_curve(result)} "
        f"({result['margin']:+.1f} points; the check needs +{MARGIN:.0f}) in {result['seconds']:.0f} s"
    )


def table(results):
    """The markdown table of `results`, then the mean gain of each method per variant."""
    steps = " / ".join(str(step) for step, _ in results[0]["curve"])
    lines = [
        f"| method | variant | seed | kNN top-1 (k = 20) at steps {steps} | gain | wall time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        cells = (r["method"], r["variant"], r["seed"], _curve(r), f"{r['margin']:+.1f}", f"{r['seconds']:.0f} s")
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    gains = {}
    for r in results:
        gains.setdefault(r["variant"], {}).setdefault(r["method"], []).append(r["margin"])
    lines.append("")
    for variant, by_method in gains.items():
        means = {method: mean(values) for method, values in by_method.items()}
        summary = ", ".join(f"{method} {gain:+.1f}" for method, gain in means.items())
        if {"clsa", "mocov2"} <= means.keys():
            summary += f"; CLSA - MoCo v2: {means['clsa'] - means['mocov2']:+.1f} points"
        lines.append(f"- {variant}: mean gain over {len(next(iter(by_method.values())))} seed(s): {summary}")
    return "\n".join(lines)


def main(argv=None):
    parser = entry_parser(__doc__)
    parser.add_argument(
        "--output-dir", "--out", type=Path, default=Path("learning_check_output"), help="data sets and run folders"
    )
    parser.add_argument("--method", nargs="+", choices=tuple(RECIPES), default=["clsa"])
    parser.add_argument("--variant", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seed", nargs="+", type=at_least(0), default=[0])
    parser.add_argument("--jobs", type=at_least(1), default=1, help="runs at a time, each on its share of the cores")
    parser.add_argument(
        "opts", nargs="*", metavar="KEY VALUE", help="config overrides of every run, e.g. SOLVER.EPOCHS 200"
    )
    args = parser.parse_args(argv)
    for method in args.method:  # a bad override is refused before a grid starts its runs
        recipe_config(method, args.opts)
    # Seed by seed, so that an interrupted grid has every method and variant of its first seeds.
    grid = [(m, v, s) for s in args.seed for m in args.method for v in args.variant]
    start = time.time()
    if len(grid) == 1:
        results = [run(args.output_dir, *grid[0], overrides=args.opts)]
    else:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda cell: _run_alone(args, *cell, threads), grid))
    results.sort(key=lambda r: (r["method"], r["variant"], r["seed"]))
    for result in results:
        print(_line(result))
    if len(results) > 1:
        print(table(results))
    print(f"{len(results)} run(s) in {time.time() - start:.0f} s")
    if not all(result["passed"] for result in results):
        sys.exit(1)


if __name__ == "__main__":
    exit_on_user_error(main)
