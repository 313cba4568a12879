"""What the transfer scripts share: common flags, exit code 2 with one line on bad input, results.json,
the resume checkpoint's check."""

import argparse
import sys
from pathlib import Path

import torch

from common.cli import one_line_errors
from common.io import atomic_write_json, sha256_file
from converters.checkpoint import CheckpointError, load_backbone
from transfer.features import cached_features
from transfer.voc import DatasetError, read_split, voc2007_root


class UsageError(ValueError):
    """Flags that cannot run together here; the message says what to change."""


def parser(description, default_output_dir):
    p = one_line_errors(argparse.ArgumentParser(description=description))
    p.add_argument(
        "--weights",
        type=Path,
        required=True,
        help="pretraining, MoCo/CLSA reference or torchvision checkpoint (query encoder is used)",
    )
    p.add_argument("--output-dir", type=Path, default=Path(default_output_dir), help="results.json goes here")
    return p


def run(main):
    """Calls main(); a bad checkpoint, data folder or flag ends the process with one line and exit code 2."""
    try:
        main()
    except (CheckpointError, DatasetError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def load_weights(path):
    """(query-encoder Backbone, what results.json records of the file); CheckpointError if it holds no ResNet.
    The one read of the checkpoint per run: the models are built from the returned Backbone."""
    backbone = load_backbone(path, encoder="query")
    return backbone, {
        "path": str(Path(path).resolve()),
        "sha256": sha256_file(path),
        "arch": backbone.arch,
        "source_kind": backbone.source_kind,
    }


def load_resume_state(path, weights_sha256, **flags):
    """The checkpoint a rerun resumes from; CheckpointError if it is unreadable, or was written for other
    --weights or other values of `flags` (each named as its command-line flag)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        written_for = [state["weights_sha256"]] + [state[name] for name in flags]
    except Exception as error:  # torch.load raises many types; any of them means the file is unusable
        raise CheckpointError(
            path, f"unreadable resume checkpoint ({type(error).__name__}); delete it or use another --output-dir"
        ) from error
    if written_for != [weights_sha256, *flags.values()]:
        settings = " ".join(f"--{name.replace('_', '-')} {state[name]}" for name in flags)
        raise CheckpointError(
            path, f"was written for {settings} and its --weights; rerun with those or use another --output-dir"
        )
    return state


def write_results(output_dir, results):
    path = Path(output_dir) / "results.json"
    atomic_write_json(results, path)
    print(f"wrote {path}")
    return path


def load_voc07(args, layer, **extract_args):
    """What both VOC07 scripts start from: the checkpoint (read once), the VOC2007 folder, the
    trainval/test (paths, labels) and their frozen features (through the cache)."""
    backbone, weights = load_weights(args.weights)
    root = voc2007_root(args.data_root)
    splits = {name: read_split(root, name) for name in ("trainval", "test")}
    features = {
        name: cached_features(
            backbone, weights["sha256"], name, paths, layer, args.cache_dir, num_workers=args.workers, **extract_args
        )
        for name, (paths, _) in splits.items()
    }
    return weights, root, splits, features
