"""Writes the built-in synthetic data sets in the real ImageNet, Pascal VOC and COCO 2017 layouts.

    python tools/make_synthetic_data.py --output-dir datasets [--seed 0] [--size tiny|small]
    python tools/make_synthetic_data.py --output-dir datasets --variant shapes

--variant shapes writes only datasets/shapes/{train,val}: ten classes told apart by shape alone
(a white outline deformed per image on one grey ground), the set the pretraining learning check runs on.

Then point the suite at them: DETECTRON2_DATASETS=datasets for detectron2's builtin names
(voc_2007_trainval, voc_2012_trainval, voc_2007_test, coco_2017_train, coco_2017_val), and
datasets/imagenet/train as the pretraining DATA.ROOT.
"""

import time

from common.cli import entry_parser, exit_on_user_error
from common.synthetic import SIZES, generate, generate_shapes


def main(argv=None):
    parser = entry_parser(__doc__)
    parser.add_argument(
        "--output-dir", "--out", required=True, help="folder to write imagenet/, VOC2007/, VOC2012/, coco/ into"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="tiny", help="tiny: seconds, for tests; small: the demo"
    )
    parser.add_argument(
        "--variant",
        choices=("suite", "shapes"),
        default="suite",
        help="suite: imagenet/, VOC2007/, VOC2012/, coco/; shapes: the shape-only ImageFolder set",
    )
    args = parser.parse_args(argv)
    start = time.time()
    folders = (
        [generate_shapes(args.output_dir, seed=args.seed)]
        if args.variant == "shapes"
        else generate(args.output_dir, seed=args.seed, size=args.size)
    )
    for folder in folders:
        print(f"  {folder}")
    name = args.size if args.variant == "suite" else "shapes"
    print(f"synthetic data sets ({name}, seed {args.seed}) ready in {time.time() - start:.1f} s")


if __name__ == "__main__":
    exit_on_user_error(main)
