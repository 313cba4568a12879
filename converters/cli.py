"""Command-line plumbing the converters share: CKPT [OUT] --encoder, exit code 2 on bad input, summary."""
import argparse
import sys
from pathlib import Path

from converters.checkpoint import ENCODERS, CheckpointError, load_backbone


def run(argv, description, default_suffix, write):
    """Loads CKPT, calls `write(backbone, ckpt, out)` and prints what was kept and dropped.

    Returns the exit code: 0, or 2 with a one-line reason on stderr and no output file.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("ckpt", type=Path, help="checkpoint to convert")
    parser.add_argument("out", type=Path, nargs="?", help=f"output file (default: CKPT with suffix {default_suffix})")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="query",
                        help="query encoder (default) or the momentum (key) encoder of a pretraining checkpoint")
    args = parser.parse_args(argv)
    out = args.out or args.ckpt.with_suffix(default_suffix)
    try:
        backbone = load_backbone(args.ckpt, args.encoder)
        if out.resolve() == args.ckpt.resolve():
            raise CheckpointError(args.ckpt, "the output would overwrite the input; pass a different OUT")
        write(backbone, args.ckpt, out)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"source:  {args.ckpt} ({backbone.source_kind}, {backbone.arch}, --encoder {args.encoder})")
    print(f"kept:    {len(backbone.state_dict)} tensors")
    print(f"dropped: {len(backbone.dropped)} tensors: {backbone.dropped_summary()}")
    print(f"wrote:   {out}")
    return 0
