"""What the transfer scripts share: common flags, exit code 2 with one line on bad input, results.json."""
import argparse
import sys
from pathlib import Path

from common.io import atomic_write_json, sha256_file
from converters.checkpoint import CheckpointError, load_backbone
from transfer.voc import DatasetError


def parser(description, default_output_dir):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--weights", type=Path, required=True,
                   help="pretraining, MoCo/CLSA reference or torchvision checkpoint (query encoder is used)")
    p.add_argument("--output-dir", type=Path, default=Path(default_output_dir), help="results.json goes here")
    return p


def run(main):
    """Calls main(); a bad checkpoint or data folder ends the process with one line and exit code 2."""
    try:
        main()
    except (CheckpointError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def load_weights(path):
    """(query-encoder Backbone, what results.json records of the file); CheckpointError if it holds no ResNet.
    The one read of the checkpoint per run: the models are built from the returned Backbone."""
    backbone = load_backbone(path, encoder="query")
    return backbone, {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "arch": backbone.arch,
                      "source_kind": backbone.source_kind}


def write_results(output_dir, results):
    path = Path(output_dir) / "results.json"
    atomic_write_json(results, path)
    print(f"wrote {path}")
    return path
