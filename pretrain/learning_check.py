"""The learning check: a short CPU pretraining run must lift kNN top-1 clearly above the same network
at its random initialisation.

It pretrains with the recipe pretrain/configs/cpu/learning_check.yaml on the shapes set
(common.synthetic.write_shapes: ten classes that only the shape tells apart, so random features are
not already good), and reads the kNN monitor's top-1 at k = 20 on the set's val split before the
first step and after the last, from metrics.json.
"""

from pathlib import Path

from common.synthetic import generate_shapes
from pretrain import launch
from pretrain.metrics import read_metrics

RECIPE = Path(__file__).resolve().parent / "configs" / "cpu" / "learning_check.yaml"
METRIC = "knn/top1_k20"
# Points of top-1 the pretrained backbone must gain over its random initialisation.
MARGIN = 10.0


def knn_before_and_after(metrics_path, metric=METRIC):
    """(`metric` before the first step, at the last evaluation) from a run's metrics.json."""
    rows = read_metrics(metrics_path)
    scores = [(row["iteration"], row[metric]) for row in rows if metric in row]
    if not scores or scores[0][0] != -1:
        raise ValueError(f"{metrics_path} holds no {metric} of the initial backbone (KNN.ROOT unset, or resumed)")
    return scores[0][1], scores[-1][1]


def run(out, seed=0, *overrides):
    """Pretrains into out/pretrain (resuming or reusing what is there) on out/shapes; returns
    {"init": top-1 %, "pretrained": top-1 %, "margin": points, "passed": bool}."""
    out = Path(out)
    shapes = generate_shapes(out, seed=seed)
    opts = ["DATA.ROOT", str(shapes / "train"), "KNN.ROOT", str(shapes), "OUTPUT_DIR", str(out / "pretrain")]
    launch.run(*launch.configure(str(RECIPE), [*opts, "SEED", str(seed), *overrides], resume="auto"), resume="auto")
    init, pretrained = knn_before_and_after(out / "pretrain" / "metrics.json")
    return {"init": init, "pretrained": pretrained, "margin": pretrained - init, "passed": pretrained - init >= MARGIN}
