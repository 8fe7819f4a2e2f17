"""One data directory, one running station: an OS lock held for the process's lifetime.

`flock` on `station.lock`: the kernel releases it when the process ends however it ends (a kill
-9 included), so a stale lock file never keeps a station from starting. The file holds the
holder's PID, which the refusal names. Linux (and other POSIX systems) only, like the station.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from station.core.errors import StationError

LOCK_FILE = "station.lock"


class DataDirInUse(StationError):
    """Another station process holds the data directory."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class DataDirLock:
    """Held from `acquire()` to `release()` (or the process's end); both are idempotent."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None
        self._guard = threading.Lock()  # release() may come from the line's stop thread

    def acquire(self) -> None:
        """Take the lock at once or raise DataDirInUse naming the directory and the holder."""
        with self._guard:
            if self._fd is not None:
                return
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                # O_NOFOLLOW: a symlink planted here must not make us truncate its target.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise StationError(
                    f"{self.data_dir}: cannot create the station lock: {exc}"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                holder = f"PID {pid}" if pid else "another process"
                raise DataDirInUse(
                    f"data directory {self.data_dir} is in use by another station ({holder}); "
                    "stop that one first, or give this one its own --data-dir",
                    pid,
                ) from None
            except OSError as exc:
                os.close(fd)
                raise StationError(f"{self.path}: cannot be locked: {exc}") from exc
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd

    def release(self) -> None:
        """Let the next station start (the PID stays in the file; the lock is what counts)."""
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
