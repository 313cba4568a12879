"""results.json of every transfer protocol: what it measured, on which weights and data, and how.

One record for every protocol: "task", "metrics", "protocol" (the script's docstring and this run's
settings), "weights" (path, sha256, arch, kind), "data_root" and "data" (the data's fingerprint),
"split_sizes", "processes", "wall_time_s" (with its "total"), then what the protocol adds.
"""

import contextlib
import json
import time
from pathlib import Path

from common.backbone import load_backbone
from common.errors import CheckpointError
from common.io import atomic_write_json, fingerprint_files, sha256_file
from common.locking import output_lock
from common.records import check_record


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


def check_inputs(weights_path, data_check, data_root):
    """The checks a transfer script makes before its output folder exists: the weights file, then
    `data_check(data_root)` (a DatasetError naming what is missing)."""
    if not Path(weights_path).is_file():
        raise CheckpointError(weights_path, "no such file")
    data_check(data_root)


@contextlib.contextmanager
def output_folder(output_dir, task, weights_path, first_rank=0):
    """Holds `output_dir` for this run (the launcher of global rank 0 holds it for every process) and
    refuses a folder whose results.json another task or checkpoint wrote: a rerun for the same weights
    replaces it, other weights need their own folder."""
    with output_lock(output_dir) if first_rank == 0 else contextlib.nullcontext():
        path = Path(output_dir) / "results.json"
        if first_rank == 0 and path.exists():
            try:
                saved = json.loads(path.read_text())
                saved = {"task": saved["task"], "weights.sha256": saved["weights"]["sha256"]}
            except (ValueError, KeyError, TypeError):
                saved = None
            check_record(
                path,
                saved,
                {"task": task, "weights.sha256": sha256_file(weights_path)},
                "pass another --output-dir, or remove that results.json to replace it",
            )
        yield


def protocol(doc, settings):
    """results.json's "protocol": the script's docstring, the protocol's one description (also its
    --help, and what the README points to), without its command lines; then this run's `settings`."""
    paragraphs = [block for block in doc.strip().split("\n\n")[1:] if not block.startswith("    ")]
    prose = " ".join(" ".join(line.strip() for line in block.splitlines()) for block in paragraphs)
    return f"{prose} This run: {settings}."


def write_results(
    output_dir,
    task,
    metrics,
    protocol,
    weights,
    data_root,
    data_patterns,
    split_sizes,
    start,
    processes=1,
    wall_time_s=None,
    **details,
):
    """Writes output_dir/results.json atomically; returns the record. `start` is the run's
    time.perf_counter() at its start, `wall_time_s` the times of its phases, `details` what the
    protocol records besides (per-class AP, history, ...)."""
    record = {
        "task": task,
        "metrics": metrics,
        "protocol": protocol,
        "weights": weights,
        "data_root": str(data_root),
        "data": fingerprint_files(data_root, data_patterns),
        "split_sizes": split_sizes,
        "processes": processes,
        **details,
        "wall_time_s": {**(wall_time_s or {}), "total": time.perf_counter() - start},
    }
    path = Path(output_dir) / "results.json"
    atomic_write_json(record, path)
    print(f"wrote {path}")
    return record
