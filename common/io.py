"""File helpers every stage uses: atomic writes (a reader never sees half a file) and file hashes."""

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    On any error the temporary file is removed and an existing `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temp_files(folder):
    """Removes the temporary files atomic_path leaves behind when its process is killed (kill -9)
    mid-write; call it only where no other process of the same run is writing. Returns them."""
    stale = [path for path in Path(folder).glob(".*.tmp") if path.is_file()]
    for path in stale:
        path.unlink()
    return stale


def atomic_torch_save(obj, path):
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_json(obj, path):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_files(root, patterns, edge=1 << 20):
    """{"root", "files", "sha256"}: a cheap fingerprint of the files under `root` matching the glob
    `patterns`: each one's relative name, size and first and last `edge` bytes (the whole of a split
    list), and each matching folder's name and number of entries. Another data set behind the same
    path, or other split lists, give another sha256."""
    root = Path(root).resolve()
    digest, count = hashlib.sha256(), 0
    for path in sorted({p for pattern in patterns for p in root.glob(pattern)}):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_dir():
            digest.update(f"dir {len(os.listdir(path))}\0".encode())
        else:
            size = path.stat().st_size
            digest.update(f"{size}\0".encode())
            with open(path, "rb") as f:
                digest.update(f.read(edge))
                if size > 2 * edge:
                    f.seek(-edge, os.SEEK_END)
                    digest.update(f.read(edge))
        count += 1
    return {"root": str(root), "files": count, "sha256": digest.hexdigest()}
