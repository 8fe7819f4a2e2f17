"""Files written so that a crash or a power cut leaves the old state or the whole new file.

Every writer in the station (archive images, model artifacts, engine caches, the demo product,
the records spool) goes through these, so "atomic" means the same thing everywhere: write a
temporary name in the same folder, fsync, `os.replace`, and fsync the folder before anything
that points at the file is committed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

TMP_PREFIX = ".tmp-"  # temporary names; a sweep may delete them once they are old


def _write_bytes(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` to `fd`. Kept separate so that a test can inject a disk-full fault."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_atomic(path: Path, data: bytes | memoryview, *, durable: bool = True) -> None:
    """Write a file so that readers see the old state or the whole new file, never a part.

    With `durable`, the data is fsynced before the rename; the caller fsyncs the folder
    (`fsync_dir`) once for a batch, before committing anything that points here.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            _write_bytes(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(path: Path) -> None:
    """Make the renames in a folder durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> int:
    """Delete a file if it is there; returns the bytes freed (0 when it was already gone)."""
    try:
        size = path.stat().st_size
        path.unlink()
        return size
    except FileNotFoundError:
        return 0
