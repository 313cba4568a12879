"""Shows that pretraining learns: kNN top-1 of a short CPU run against the same network at random init.

    python tools/learning_check.py [--output-dir learning_check_output]

Writes the shapes set (ten classes told apart by shape alone) to OUT/shapes, pretrains with
pretrain/configs/cpu/learning_check.yaml into OUT/pretrain, and prints the kNN monitor's top-1
(k = 20) on the shapes val split before the first step and after the last. Exit code 1 when the
gain is below pretrain.learning_check.MARGIN points. A second run reuses the finished run.
"""

import sys
import time
from pathlib import Path

from common.cli import entry_parser, exit_on_user_error
from pretrain.learning_check import MARGIN, run


def main(argv=None):
    parser = entry_parser(__doc__)
    parser.add_argument(
        "--output-dir", "--out", type=Path, default=Path("learning_check_output"), help="data set and run folder"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    result = run(args.output_dir, args.seed)
    print(
        f"kNN top-1 (k=20) on the shapes val split: random init {result['init']:.1f}%, pretrained "
        f"{result['pretrained']:.1f}% ({result['margin']:+.1f} points; the check needs +{MARGIN:.0f}) "
        f"in {time.time() - start:.0f} s"
    )
    if not result["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    exit_on_user_error(main)
