"""The learning check: a short CPU pretraining run must lift kNN top-1 clearly above the same network
at its random initialisation, for CLSA and for MoCo v2 at the same budget.

A run pretrains with one recipe of RECIPES (CLSA-Single, or MoCo v2: the same recipe without the
strong view) on one variant of the shapes set (common.synthetic.write_shapes: ten classes that only
the shape tells apart, "plain" or "coloured"), and reads the kNN monitor's top-1 at k = 20 on the
set's val split from metrics.json: before the first step, every KNN.PERIOD_ITERS steps and after the
last. Seed k draws both the data set and the run.
"""

import json
import time
from pathlib import Path

from common.environment import config_hash
from common.errors import UserError
from common.io import atomic_write_json
from common.synthetic import SHAPES_VARIANTS, generate_shapes
from pretrain import launch
from pretrain.config import load_config
from pretrain.metrics import read_metrics

CONFIGS = Path(__file__).resolve().parent / "configs" / "cpu"
RECIPES = {"clsa": CONFIGS / "learning_check.yaml", "mocov2": CONFIGS / "learning_check_mocov2.yaml"}
VARIANTS = tuple(SHAPES_VARIANTS)
METRIC = "knn/top1_k20"
# Points of top-1 the pretrained backbone must gain over its random initialisation.
MARGIN = 10.0
RESULT = "learning_check.json"


def knn_curve(metrics_path, metric=METRIC):
    """[[steps done, `metric`], ...] of a run's metrics.json, from 0 (the initial backbone) to the last."""
    rows = read_metrics(metrics_path)
    curve = [[row["iteration"] + 1, row[metric]] for row in rows if metric in row]
    if not curve or curve[0][0] != 0:
        raise ValueError(f"{metrics_path} holds no {metric} of the initial backbone (KNN.ROOT unset, or resumed)")
    return curve


def run_folder(out, method, variant, seed):
    return Path(out) / method / variant / f"seed_{seed}"


def recipe_config(method, overrides):
    """`method`'s recipe with the config `overrides`; a UserError for an override that it refuses, so
    that a grid stops before any set is drawn."""
    return load_config(str(RECIPES[method]), list(overrides), world_size=1)


def run(out, method="clsa", variant="plain", seed=0, overrides=()):
    """Pretrains `method` on `variant` with `seed` into run_folder(...)/pretrain, the data set in
    out/data/seed_<seed>; returns the result, {"curve", "margin", "passed", "seconds", ...}, also
    written to run_folder(...)/learning_check.json. A finished run's result is read back, not
    recomputed, when its recipe and overrides are today's; an unfinished one resumes (its seconds are
    then those of the last part)."""
    if method not in RECIPES or variant not in VARIANTS:
        choices = f"methods: {', '.join(RECIPES)}; variants: {', '.join(VARIANTS)}"
        raise UserError(f"no learning check {method!r} on {variant!r}; {choices}")
    recipe = config_hash(recipe_config(method, overrides).dump())
    folder = run_folder(out, method, variant, seed)
    record = {"method": method, "variant": variant, "seed": seed, "overrides": list(overrides), "recipe": recipe}
    result_path = folder / RESULT
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if {k: result.get(k) for k in record} != record:
            raise UserError(
                f"{result_path} is a check of another recipe (config sha256 {result.get('recipe')}, overrides "
                f"{result.get('overrides')}; today's: {recipe}, {list(overrides)}); pass another --output-dir"
            )
        return result
    start = time.monotonic()
    shapes = generate_shapes(Path(out) / "data" / f"seed_{seed}", seed=seed, variant=variant)
    opts = ["DATA.ROOT", str(shapes / "train"), "KNN.ROOT", str(shapes), "OUTPUT_DIR", str(folder / "pretrain")]
    opts += ["SEED", str(seed), *overrides]
    launch.run(*launch.configure(str(RECIPES[method]), opts, resume="auto"), resume="auto")
    curve = knn_curve(folder / "pretrain" / "metrics.json")
    margin = curve[-1][1] - curve[0][1]
    result = {
        **record,
        "curve": curve,
        "margin": margin,
        "passed": margin >= MARGIN,
        "seconds": time.monotonic() - start,
    }
    atomic_write_json(result, result_path)
    return result
