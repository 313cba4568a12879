"""One writer per output folder: an exclusive lock held for the whole run.

The lock is flock(2) on `<folder>/.lock`. The kernel releases it when its holder ends, however it
ends (kill -9 included), so a lock is never stale: a later run takes it over and reports who held it
before, from the pid and host the holder writes into the file. On NFS, Linux clients implement
flock as a whole-file lock on the server (NFSv3 through NLM, NFSv4 natively), so runs on two hosts
exclude each other; Lustre needs the `flock` mount option. Where the file system refuses locks
(ENOLCK, ENOSYS, EOPNOTSUPP), the run goes on unlocked with a warning: a second run there is not
detected. docs/reliability.md says the same for users.
"""

import errno
import fcntl
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from common.errors import OutputFolderError
from common.io import check_output_folder, writing_into

LOCK_NAME = ".lock"
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP}

logger = logging.getLogger(__name__)


class FolderInUseError(OutputFolderError):
    """Another live process holds the output folder's lock."""


@contextmanager
def output_lock(folder):
    """Holds `folder`'s lock (creating the folder) for the block. Raises FolderInUseError, naming the
    holder's pid and host, if another process holds it, and OutputFolderError if the folder cannot be
    written. Yields the holder a dead run left behind
    ("pid N on HOST"), which has been logged, or None."""
    folder = Path(folder)
    check_output_folder(folder)  # the first write of a run: a read-only or misnamed folder stops here
    with writing_into(folder):
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise FolderInUseError(
                    f"{folder} is in use by {_holder(fd) or 'another process'}; "
                    "wait for that run to end or choose another output folder"
                ) from None
            if error.errno not in _NO_LOCKS:
                raise
            logger.warning(
                "%s: the file system does not support locks (%s); a second run writing to this folder "
                "will not be detected",
                folder,
                os.strerror(error.errno),
            )
            locked = False
        previous = _holder(fd) if locked else None
        if previous:
            logger.warning("%s: took over the lock of %s, which ended without releasing it", folder, previous)
        if locked:
            _write(fd, f"{os.getpid()} {socket.gethostname()}\n")
        try:
            yield previous
        finally:
            if locked:
                _write(fd, "")  # a clean end leaves no holder for the next run to report
    finally:
        os.close(fd)  # releases the lock


def _holder(fd):
    """ "pid N on HOST" from the lock file, or None when it is empty (released cleanly, or being written)."""
    fields = os.pread(fd, 4096, 0).decode(errors="replace").split()
    return f"pid {fields[0]} on {fields[1]}" if len(fields) == 2 else None


def _write(fd, text):
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)
