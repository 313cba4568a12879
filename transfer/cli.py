"""What the transfer scripts share: common flags, the one read of the weights, results.json and the
resume checkpoint's check."""

import argparse
from pathlib import Path

from common.backbone import load_backbone
from common.checkpoint_files import read_checkpoint
from common.cli import one_line_errors
from common.io import atomic_write_json, sha256_file
from common.records import check_record
from transfer.features import cached_features
from transfer.voc import read_split, voc2007_root


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
    """The checkpoint a rerun resumes from; CheckpointError if it is unreadable, RecordMismatchError if
    it was written for other --weights or other values of `flags` (each named as its command-line flag)."""
    state = read_checkpoint(path, fix="delete it or use another --output-dir")
    saved = state if isinstance(state, dict) else {}
    check_record(
        path,
        {"--weights (sha256)": saved.get("weights_sha256"), **{_flag(k): saved.get(k) for k in flags}},
        {"--weights (sha256)": weights_sha256, **{_flag(k): v for k, v in flags.items()}},
        "rerun with those or use another --output-dir",
    )
    return state


def _flag(name):
    return f"--{name.replace('_', '-')}"


def protocol(doc, settings):
    """results.json's "protocol": the script's docstring, the protocol's one description (also its
    --help, and what the README points to), without its command lines; then this run's `settings`."""
    paragraphs = [block for block in doc.strip().split("\n\n")[1:] if not block.startswith("    ")]
    prose = " ".join(" ".join(line.strip() for line in block.splitlines()) for block in paragraphs)
    return f"{prose} This run: {settings}."


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
