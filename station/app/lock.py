"""One data directory, one running station: an OS lock held for the process's lifetime.

`flock` on `station.lock`: the kernel releases it when the process ends however it ends (a kill
-9 included), so a stale lock file never keeps a station from starting. The file holds the
holder's PID, which the refusal names.
"""

from __future__ import annotations

import os
from pathlib import Path

from station.core.errors import StationError

LOCK_FILE = "station.lock"

try:  # POSIX (Linux, Jetson)
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]


class DataDirInUse(StationError):
    """Another station process holds the data directory."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class DataDirLock:
    """Held from `acquire()` to `release()` (or the process's end)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or raise DataDirInUse naming the directory and the holder."""
        if self._fd is not None:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StationError(f"{self.data_dir}: cannot create the station lock: {exc}") from exc
        if not _try_lock(fd):
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"PID {pid}" if pid else "another process"
            raise DataDirInUse(
                f"data directory {self.data_dir} is in use by another station ({holder}); "
                "stop that one first, or give this one its own --data-dir",
                pid,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the next station start (the PID stays in the file; the lock is what counts)."""
        if self._fd is None:
            return
        try:
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
