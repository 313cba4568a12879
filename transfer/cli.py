"""The command-line flags every transfer script shares."""

import argparse
from pathlib import Path

from common.cli import one_line_errors


def parser(doc, default_output_dir):
    """The flags every transfer script has; --help prints the script's docstring: its protocol."""
    p = one_line_errors(argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument(
        "--weights",
        type=Path,
        required=True,
        help="pretraining, MoCo/CLSA reference or torchvision checkpoint (query encoder is used)",
    )
    p.add_argument("--output-dir", type=Path, default=Path(default_output_dir), help="results.json goes here")
    return p
