"""The command-line flags every transfer script shares."""

from pathlib import Path

from common.cli import entry_parser


def parser(doc, default_output_dir):
    """The flags every transfer script has; --help prints the script's docstring: its protocol."""
    p = entry_parser(doc)
    p.add_argument(
        "--weights",
        type=Path,
        required=True,
        help="pretraining, MoCo/CLSA reference or torchvision checkpoint (query encoder is used)",
    )
    p.add_argument("--output-dir", type=Path, default=Path(default_output_dir), help="results.json goes here")
    return p


def add_voc2007_data(p):
    """--data of the VOC07 scripts (--data-root, its older name, still works)."""
    p.add_argument(
        "--data", "--data-root", dest="data_root", help="VOC2007 folder (default: $DETECTRON2_DATASETS/VOC2007)"
    )
