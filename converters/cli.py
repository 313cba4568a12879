"""Command-line plumbing the converters share: CKPT [OUT] --encoder, exit code 2 on bad input, summary."""

import filecmp
from pathlib import Path

from common.backbone import ENCODERS, load_backbone
from common.cli import entry_parser, exit_on_user_error
from common.errors import CheckpointError, ConfigError
from common.io import temporary_sibling


def _same_bytes(a, b):
    return filecmp.cmp(a, b, shallow=False)


def run(argv, description, default_suffix, write, same=_same_bytes):
    """Loads CKPT, calls `write(backbone, ckpt, path)` and prints what was kept and dropped.

    An existing OUT is replaced only with --overwrite, or when it is `same` as the conversion
    (converting the same checkpoint again; by default the very same bytes). Returns exit code 0; bad
    input ends the process with one line on stderr and exit code 2, and OUT as it was.
    """
    return exit_on_user_error(_convert, argv, description, default_suffix, write, same)


def _convert(argv, description, default_suffix, write, same):
    parser = entry_parser(description)
    parser.add_argument("ckpt", type=Path, help="checkpoint to convert")
    parser.add_argument("out", type=Path, nargs="?", help=f"output file (default: CKPT with suffix {default_suffix})")
    parser.add_argument(
        "--encoder",
        choices=sorted(ENCODERS),
        default="query",
        help="query encoder (default) or the momentum (key) encoder of a pretraining checkpoint",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT that holds something else")
    args = parser.parse_args(argv)
    out = args.out or args.ckpt.with_suffix(default_suffix)
    try:
        if out.is_dir():
            raise CheckpointError(out, "is a folder; pass the output file's path")
        backbone = load_backbone(args.ckpt, args.encoder)
        if out.resolve() == args.ckpt.resolve():
            raise CheckpointError(args.ckpt, "the output would overwrite the input; pass a different OUT")
        if out.exists() and not args.overwrite:
            with temporary_sibling(out) as converted:
                write(backbone, args.ckpt, converted)
                if not same(converted, out):
                    raise CheckpointError(
                        out, "exists and holds something else; pass --overwrite to replace it, or another OUT"
                    )
        else:
            write(backbone, args.ckpt, out)
    except OSError as error:
        raise ConfigError(
            f"cannot write {out} ({type(error).__name__}: {error.strerror or error}); pass a writable OUT"
        ) from error
    print(f"source:  {args.ckpt} ({backbone.source_kind}, {backbone.arch}, --encoder {args.encoder})")
    print(f"kept:    {len(backbone.state_dict)} tensors")
    print(f"dropped: {len(backbone.dropped)} tensors: {backbone.dropped_summary()}")
    print(f"wrote:   {out}")
    return 0
