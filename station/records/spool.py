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

A full disk must not take the spool down with the database: `reserve()` sets aside its size on
disk at start (`spool/reserve.bin`, allocated, never read). When an append finds the disk full
the reserve is given back and the append tried again, so the spool has its room exactly when
nothing else has; it is set aside again once the disk has room (`reserve()` at each retention
pass).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
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
RESERVE = "reserve.bin"


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
        self._path: Path | None = None  # its name
        # The reserve was given back to a full disk: until it is set aside again, nothing but
        # records may use the room (the recorder stops archiving images meanwhile).
        self.released = False
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
                self._append_locked(data)
            except OSError as exc:
                self._undo_locked()
                if exc.errno != errno.ENOSPC or not self._release_locked():
                    raise StorageError(f"{self.folder}: records spool not written: {exc}") from exc
                log.error("disk full: the records spool's reserve is given back and used")
                try:
                    self._append_locked(data)
                except OSError as again:
                    self._undo_locked()
                    raise StorageError(
                        f"{self.folder}: records spool not written: {again}"
                    ) from again
            self._size += len(data)
            self._bytes = (self._bytes or 0) + len(data)

    def reserve(self) -> bool:
        """Set aside the spool's size on disk (once); True when it is set aside now. Called at
        start and at each retention pass: a reserve given back during a full disk returns once
        there is room again."""
        with self._lock:
            path = self.folder / RESERVE
            want = max(0, self.max_bytes - self._size_locked())
            if want == 0:
                return True
            try:
                if path.is_file() and path.stat().st_size >= want:
                    self.released = False
                    return True
                self.folder.mkdir(parents=True, exist_ok=True)
                if shutil.disk_usage(self.folder).free < 2 * want:
                    return False  # not while the disk is nearly full: it would fill it
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.posix_fallocate(fd, 0, want)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.released = False
                return True
            except OSError as exc:
                log.warning("records spool: reserve not set aside: %s", exc)
                path.unlink(missing_ok=True)
                return False

    def _release_locked(self) -> bool:
        """Give the reserve back to the disk; True when there was one."""
        path = self.folder / RESERVE
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("records spool: reserve not given back: %s", exc)
            return False
        self.released = True
        return True

    def _append_locked(self, data: bytes) -> None:
        if self._size_locked() + len(data) > self.max_bytes:
            raise StorageError(f"{self.folder}: records spool full ({self.max_bytes / 1e6:.0f} MB)")
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Sorted by time, never reused (see the module docstring).
            self._path = self.folder / f"{time.time_ns():020d}-{os.getpid()}{_SUFFIX}"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = 0
            fsync_dir(self.folder)
        _write_all(self._fd, data)
        os.fsync(self._fd)

    def _undo_locked(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            log.error("records spool: a failed append could not be cut back: %s", exc)
        empty, path = self._size == 0, self._path
        self._close_locked()
        if empty and path is not None:  # a file that never took a record: none left behind
            path.unlink(missing_ok=True)

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


LEDGER = "counts.ledger"
LEDGER_BYTES = 4096


class CountsLedger:
    """The shift counts the database has not taken yet (results lost, frames dropped while it
    could not be written), kept on disk so that a station that exits before the database is
    writable again still brings them into its counters at the next start.

    One fixed-size file, written at start and then only overwritten in place: it needs no new
    room on a full disk. Its record carries an id; the recorder notes the id in the database in
    the transaction that stores those counts (the spool files' table), so a crash between that
    COMMIT and the ledger's next write never counts them twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def prepare(self) -> None:
        """Create the file at its full size (real blocks, not a hole) if it is not there."""
        try:
            if self.path.is_file() and self.path.stat().st_size == LEDGER_BYTES:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as fh:
                fh.write(b" " * LEDGER_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.warning("records: counts ledger %s cannot be made: %s", self.path, exc)

    def write(self, record: dict[str, Any] | None) -> bool:
        """Overwrite the record (None: empty), durably; False when it cannot be written."""
        data = b"" if record is None else json.dumps(record, separators=(",", ":")).encode()
        if len(data) > LEDGER_BYTES:
            log.error("records: %d bytes of counts do not fit the ledger", len(data))
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            log.warning("records: counts ledger %s cannot be opened: %s", self.path, exc)
            return False
        try:
            os.pwrite(fd, data.ljust(LEDGER_BYTES), 0)
            os.fsync(fd)
            return True
        except OSError as exc:
            log.warning("records: counts ledger %s not written: %s", self.path, exc)
            return False
        finally:
            os.close(fd)

    def read(self) -> dict[str, Any] | None:
        """The record, or None (empty, missing, or damaged: ignored with a warning)."""
        try:
            text = self.path.read_bytes().strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            log.warning("records: counts ledger %s is damaged; ignored", self.path)
            return None
        return record if isinstance(record, dict) and "id" in record else None
