"""The records spool: a durable overflow for results the database cannot take right now.

The recorder's queue is bounded. When it is full (the disk is slow, a batch is stuck behind a
long checkpoint) a result is not dropped: its row goes here, appended to a journal file and
fsynced, and the recorder's writer moves it into the database when it has caught up. The spool
itself is bounded (`max_bytes`): past it a result is lost, counted and alarmed, never silently.

    spool/<ns since epoch>-<pid>.jsonl    one record a line: "<crc32 hex> <json row>\\n"

A record is the row as the database stores it. File names never repeat, and the recorder notes
each file it moved into the database in the same transaction as its rows, so a file left behind
by a crash between that COMMIT and the file's removal is not read twice. A torn last line (a
kill in the middle of an append) fails its checksum and is where reading stops.

Appends go to the newest file; `take()` closes it, so the writer only ever reads files that no
longer change.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from station.core.errors import StorageError
from station.core.files import fsync_dir

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
_SUFFIX = ".jsonl"


def _frame(record: list[Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


class Spool:
    """Append-only journal files under `folder`, at most `max_bytes` in all."""

    def __init__(self, folder: str | Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max(0, int(max_bytes))
        self._lock = threading.Lock()
        self._fd: int | None = None  # the file being appended to (raw: no buffer to replay)
        self._size = 0  # its size, where a failed append is cut back to
        self._bytes: int | None = None  # total size of the spool files, read on first use

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(
            p
            for p in self.folder.iterdir()
            if p.suffix == _SUFFIX and p.stem.replace("-", "").isdigit()
        )

    def _size_locked(self) -> int:
        if self._bytes is None:
            self._bytes = sum(p.stat().st_size for p in self._files())
        return self._bytes

    def _close_locked(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:  # the data was fsynced already; nothing is lost here
                log.warning("records spool: close failed: %s", exc)

    def append(self, records: list[list[Any]]) -> None:
        """Write records durably (fsynced before returning); StorageError when full or failing.

        A failed append leaves nothing behind: the file is cut back to where it was and closed,
        so no half-written record can turn up later (the caller counts the result as lost).
        """
        data = b"".join(_frame(r) for r in records)
        with self._lock:
            try:
                if self._size_locked() + len(data) > self.max_bytes:
                    raise StorageError(
                        f"{self.folder}: records spool full ({self.max_bytes / 1e6:.0f} MB)"
                    )
                if self._fd is None:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    # Sorted by time, never reused (see the module docstring).
                    name = f"{time.time_ns():020d}-{os.getpid()}{_SUFFIX}"
                    self._fd = os.open(
                        self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
                    )
                    self._size = 0
                    fsync_dir(self.folder)
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                self._undo_locked()
                raise StorageError(f"{self.folder}: records spool not written: {exc}") from exc
            self._size += len(data)
            self._bytes = (self._bytes or 0) + len(data)

    def _undo_locked(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            log.error("records spool: a failed append could not be cut back: %s", exc)
        self._close_locked()

    def take(self) -> list[Path]:
        """The spool files in order, the one being appended to closed first (none when empty or
        unreadable: the next call tries again)."""
        with self._lock:
            self._close_locked()
            try:
                return self._files()
            except OSError as exc:
                log.error("records spool %s cannot be listed: %s", self.folder, exc)
                return []

    def read(self, path: Path) -> tuple[list[list[Any]], int]:
        """The records of one file, and how many bytes at its end were unreadable (torn)."""
        data = path.read_bytes()
        records: list[list[Any]] = []
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break
            line = data[pos:end]
            crc, _, body = line.partition(b" ")
            try:
                ok = int(crc, 16) == zlib.crc32(body)
                record = json.loads(body) if ok else None
            except ValueError:
                ok = False
            if not ok or not isinstance(record, list):
                break
            records.append(record)
            pos = end + 1
        return records, len(data) - pos

    def remove(self, path: Path) -> bool:
        """Delete a file whose records are all in the database; False when that failed (it is
        then read again later and its rows are not inserted twice)."""
        with self._lock:
            try:
                size = path.stat().st_size
                path.unlink()
                fsync_dir(self.folder)
            except FileNotFoundError:
                return True
            except OSError as exc:
                log.error("records spool %s not removed: %s", path, exc)
                return False
            if self._bytes is not None:
                self._bytes = max(0, self._bytes - size)
            return True

    def close(self) -> None:
        """Close the file being appended to (its records stay for the next start)."""
        with self._lock:
            self._close_locked()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
