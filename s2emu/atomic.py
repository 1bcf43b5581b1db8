"""Files replaced whole or not at all: one way for every file s2emu writes over (models, checkpoints,
results, recipes, feature caches, data bundles)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomically(path, write) -> Path:
    """Replace `path` with what write(binary file) writes, or leave it as it was: a temporary file beside it
    (its name unique to this call, so two processes or threads writing the same path never share one),
    flushed to disk, renamed over it. The temporary file is removed on any failure. OSError propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        # O_EXCL: never write into a file someone else made; 0o666 and the umask, as open() would
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # the rename itself reaches the disk with the folder
        fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path
