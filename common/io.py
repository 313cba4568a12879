"""File helpers every stage uses: atomic writes (a reader never sees half a file) and file hashes."""

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

from common.errors import OutputFolderError

_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}
_FULL = {errno.ENOSPC, errno.EDQUOT}


@contextmanager
def writing_into(folder):
    """Turns the OSError of a folder the user can fix, met while writing into `folder` (read-only, no
    space left), into one OutputFolderError that names the folder, and the free space when full. Any
    other OSError, or one about a file elsewhere, is left as it is."""
    try:
        yield
    except OSError as error:
        inside = error.filename is None or Path(os.fsdecode(error.filename)).resolve().is_relative_to(
            Path(folder).resolve()
        )
        if not inside or error.errno not in _READ_ONLY | _FULL:
            raise
        if error.errno in _READ_ONLY:
            raise OutputFolderError(
                f"cannot write to {folder} ({os.strerror(error.errno)}); make it writable or choose another "
                "output folder"
            ) from None
        free = shutil.disk_usage(_existing(folder)).free
        raise OutputFolderError(
            f"no space left to write to {folder} ({free / 2**20:.0f} MiB free on its device); free some space "
            "or choose another output folder"
        ) from None


def check_output_folder(folder):
    """Creates `folder`; an OutputFolderError if its name is not UTF-8 (logs, configs and results.json
    record it as text) or it cannot be created."""
    try:
        os.fspath(folder).encode()
    except UnicodeEncodeError:
        raise OutputFolderError(
            f"output folder {os.fspath(folder)!r}: its name is not valid UTF-8; choose a name in UTF-8"
        ) from None
    with writing_into(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)


def _existing(path):
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path


@contextmanager
def temporary_sibling(path, folder=False):
    """Yields a new temporary file (or, with `folder`, folder) beside `path`, removed at the end of the
    block. Its name holds this process's pid and host, so that the next writer into the folder removes
    what a killed process (kill -9) left behind, while a live writer's file is kept. A read-only or
    full folder raises OutputFolderError."""
    path = Path(path)
    check_output_folder(path.parent)
    with writing_into(path.parent):
        _remove_dead_writers_files(path.parent)
        prefix, suffix = f".{path.name}.{os.getpid()}@{socket.gethostname()}.", ".tmp"
        if folder:
            tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent)
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
            os.close(fd)
            # mkstemp makes the file private (0600); give it the permissions a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        try:
            yield Path(tmp)
        finally:
            _remove(Path(tmp))


@contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (temporary_sibling); renames it onto `path` only if the
    block succeeds. On any error the temporary file is removed and an existing `path` is left untouched.
    """
    with temporary_sibling(path) as tmp, writing_into(Path(path).parent):
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_dead_writers_files(folder):
    """Removes temporary_sibling's files and folders in `folder` whose process, on this host, has ended."""
    host = socket.gethostname()
    for tmp in Path(folder).glob(".*@*.tmp"):
        writer = tmp.name.rsplit("@", 1)[0].rsplit(".", 1)[-1]  # ".<name>.<pid>@<host>.<random>.tmp"
        if not writer.isdigit() or tmp.name.rsplit("@", 1)[1].rsplit(".", 2)[0] != host:
            continue
        try:
            os.kill(int(writer), 0)
        except ProcessLookupError:
            _remove(tmp)
        except PermissionError:  # alive, another user's
            pass


def remove_stale_temp_files(folder):
    """Removes the temporary files atomic_path leaves behind when its process is killed (kill -9)
    mid-write; call it only where no other process of the same run is writing. Returns them."""
    stale = [path for path in Path(folder).glob(".*.tmp") if path.is_file()]
    for path in stale:
        path.unlink()
    return stale


def atomic_torch_save(obj, path):
    import torch

    # Through a Python file, a full disk raises OSError (ENOSPC) rather than torch's "unexpected pos".
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


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
