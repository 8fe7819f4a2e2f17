"""The recorder: one writer thread that turns inspection results and events into records.

The inspection thread calls `submit()` / `submit_event()`; they never block (a bounded queue;
when it is full the loss is counted and raised as an alarm, never silent). The writer takes up
to `batch_rows` items or `batch_seconds` worth, whichever comes first, and writes them in one
transaction: at the line's 2 frames/s that is one fsync per frame at most, and a burst costs one
fsync per 50 rows.

Storage failures (disk full, a broken disk, permissions) never stop the line: the failed rows are
counted in `unrecorded` (and in the shift counters, once the database can be written again), the
`alarm` says what happened and how much was lost, every later batch is a retry, and the first
batch that commits cleanly clears the alarm and records a "storage" event with the count.

Archive: every NOK image with its anomaly map, and one OK image in `ok_sample_every` (see
`station.records.archive` for the formats). Retention runs in this thread every
`retention_interval_s`.
"""

from __future__ import annotations

import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from station.config import RecordsConfig
from station.core.errors import StorageError
from station.core.files import fsync_dir, write_atomic
from station.core.files import remove_quietly as _remove
from station.core.result import InspectionResult, StationEvent, Verdict
from station.core.worker import Worker
from station.records.archive import archive_names, encode_image, encode_map
from station.records.db import (
    INSERT_EVENT,
    INSERT_INSPECTION,
    UPSERT_COUNTS,
    Database,
    EventRow,
    InspectionRow,
    ShiftCounts,
    TimeArg,
    db_path,
    event_row,
    is_disk_full,
    shift_key,
)
from station.records.retention import RetentionReport, apply_retention

log = logging.getLogger(__name__)

MAX_SHIFT_TOTALS = 8  # shifts whose running totals are kept (the current one and a few asked for)
IDLE_TICK_S = 0.2  # how long the writer waits for work before looking at stop / retention


@dataclass(frozen=True)
class Committed:
    """A frame that is now in the database (given to `on_commit` after the COMMIT returned)."""

    id: int
    frame_id: int
    verdict: Verdict
    image_path: str | None


@dataclass(frozen=True)
class RecorderStats:
    """Counts since the recorder was created; every submitted result ends in exactly one of
    recorded / unrecorded / queued."""

    submitted: int
    recorded: int
    unrecorded: int
    queued: int
    events_recorded: int
    events_unrecorded: int
    images_archived: int
    images_unarchived: int  # rows recorded without their image (archive write failed)
    alarm: str | None


@dataclass
class _Frame:
    row: tuple[Any, ...]
    time: float
    frame_id: int
    verdict: Verdict
    shift: str
    image: np.ndarray | None  # only set when the image goes to the archive
    anomaly_map: np.ndarray | None
    threshold: float
    image_bytes: int  # memory held by image + map until the writer is done with them


class _Marker:
    """Put in the queue by `flush()`: set once everything before it was handled."""

    def __init__(self) -> None:
        self.done = threading.Event()


_Item = _Frame | StationEvent | _Marker


class Recorder(Worker):
    """Writes results and events to `data_dir/station.db` and images to `data_dir/archive`."""

    name = "recorder"

    def __init__(
        self,
        data_dir: str | Path,
        cfg: RecordsConfig | None = None,
        *,
        queue_size: int = 512,
        batch_rows: int = 50,
        batch_seconds: float = 0.2,
        retention_interval_s: float = 600.0,
        max_pending_image_mb: float = 512.0,
        durable_files: bool = True,
        on_commit: Callable[[list[Committed]], None] | None = None,
        on_failure: Callable[[Worker, BaseException], None] | None = None,
    ) -> None:
        """Prepare (nothing is opened until `start()`: the database opens in the writer thread).

        `max_pending_image_mb` bounds the memory held by images waiting for the archive: past it
        a result is still recorded, its image is counted as not archived (and alarmed).
        `on_commit` is called in the writer thread after each COMMIT with the new rows; keep it
        short (it delays the next batch).
        """
        super().__init__(on_failure)
        self.data_dir = Path(data_dir)
        self.cfg = cfg or RecordsConfig()
        self.db_path = db_path(self.data_dir)
        self.batch_rows = max(1, batch_rows)
        self.batch_seconds = max(0.0, batch_seconds)
        self.retention_interval_s = retention_interval_s
        self.durable_files = durable_files
        self._max_pending_bytes = int(max_pending_image_mb * 1024 * 1024)
        self._pending_bytes = 0
        self.on_commit = on_commit
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()  # guards the counters below; never held during I/O
        self._closed = False
        self._ok_seen = 0
        self._submitted = 0
        self._recorded = 0
        self._unrecorded = 0
        self._events_recorded = 0
        self._events_unrecorded = 0
        self._images_archived = 0
        self._images_unarchived = 0
        # shift -> [inspected, nok, dropped, unrecorded] not yet in the database
        self._deltas: dict[str, list[int]] = {}
        # shift -> running totals (stored + not yet written), loaded once per shift, then kept up
        # by `_delta`: the operator's counters are read many times a second and must never step
        # back while a batch is between leaving `_deltas` and being committed.
        self._totals: dict[str, list[int]] = {}
        self._flush_lock = threading.Lock()  # held from taking the deltas to their commit
        self._alarm_reason: str | None = None
        self._alarm_results = 0
        self._alarm_images = 0
        self._db: Database | None = None
        self._reader: Database | None = None
        self._reader_lock = threading.Lock()
        self._next_retention = 0.0
        self.last_retention: RetentionReport | None = None

    # -- the caller's side (any thread, never blocks) ------------------------------------------
    def submit(self, result: InspectionResult) -> bool:
        """Queue one result for recording; False when it could not be queued (counted, alarmed)."""
        shift = shift_key(result.timestamp, self.cfg.shift_hours)
        nok = result.verdict == Verdict.NOK
        with self._lock:
            self._submitted += 1
            self._delta(shift, 0, 1)
            if nok:
                self._delta(shift, 1, 1)
                keep_image = True
            else:
                every = self.cfg.ok_sample_every
                keep_image = every > 0 and self._ok_seen % every == 0
                self._ok_seen += 1
            if self._closed:
                self._lose_locked(shift, "records closed")
                return False
            amap = result.anomaly_map if nok else None
            nbytes = 0
            if keep_image:
                nbytes = result.image.nbytes + (amap.nbytes if amap is not None else 0)
                if self._pending_bytes + nbytes > self._max_pending_bytes:
                    # The archive is far behind: keep the verdict, let this image go (counted).
                    keep_image, nbytes = False, 0
                    self._images_unarchived += 1
                    if self._alarm_reason is None:
                        self._alarm_reason = "archive behind (disk too slow)"
                    self._alarm_images += 1
            self._pending_bytes += nbytes
            frame = _Frame(
                row=(
                    float(result.timestamp),
                    int(result.frame_id),
                    str(result.source),
                    float(result.score),
                    float(result.threshold),
                    Verdict(result.verdict).value,
                    float(result.latency_ms),
                    str(result.model_version),
                    result.label,
                ),
                time=float(result.timestamp),
                frame_id=int(result.frame_id),
                verdict=Verdict(result.verdict),
                shift=shift,
                image=result.image if keep_image else None,
                anomaly_map=amap if keep_image else None,
                threshold=float(result.threshold),
                image_bytes=nbytes,
            )
            try:
                self._queue.put_nowait(frame)
            except queue.Full:
                self._pending_bytes -= nbytes
                self._lose_locked(shift, "records queue full (disk too slow)")
                return False
        return True

    def submit_event(self, event: StationEvent) -> bool:
        """Queue one event for recording; False when it could not be queued (counted, alarmed)."""
        with self._lock:
            if not self._closed:
                try:
                    self._queue.put_nowait(event)
                    return True
                except queue.Full:
                    pass
            self._events_unrecorded += 1
        log.warning("event not recorded (queue full or recorder closed): %s", event.message)
        return False

    def count_dropped(self, n: int = 1, when: float | None = None) -> None:
        """Add frames the inspection queue dropped to the shift counters."""
        shift = shift_key(time.time() if when is None else when, self.cfg.shift_hours)
        with self._lock:
            self._delta(shift, 2, n)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted before this call is written (or counted as lost)."""
        if not self.alive:
            return self._queue.empty()
        marker = _Marker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    # -- what the status bar shows -------------------------------------------------------------
    @property
    def alarm(self) -> str | None:
        """E.g. 'disk full: 12 results not recorded'; None while records are written normally."""
        with self._lock:
            if self._alarm_reason is None:
                return None
            parts = [f"{self._alarm_results} results not recorded"]
            if self._alarm_images:
                parts.append(f"{self._alarm_images} images not archived")
            return f"{self._alarm_reason}: {', '.join(parts)}"

    @property
    def unrecorded(self) -> int:
        """Results that could not be written since the recorder was created."""
        with self._lock:
            return self._unrecorded

    def stats(self) -> RecorderStats:
        """A consistent snapshot of the recorder's counts."""
        alarm = self.alarm
        with self._lock:
            return RecorderStats(
                submitted=self._submitted,
                recorded=self._recorded,
                unrecorded=self._unrecorded,
                queued=self._submitted - self._recorded - self._unrecorded,
                events_recorded=self._events_recorded,
                events_unrecorded=self._events_unrecorded,
                images_archived=self._images_archived,
                images_unarchived=self._images_unarchived,
                alarm=alarm,
            )

    def disk_free_mb(self) -> float | None:
        """Free space on the data directory's disk, MB (None when it cannot be read)."""
        try:
            return shutil.disk_usage(self.data_dir).free / 1e6
        except OSError:
            return None

    # -- reading back (own connection, safe from any thread) -----------------------------------
    def reader(self) -> Database:
        """A read connection to the records, shared by callers of the query methods."""
        with self._reader_lock:
            if self._reader is None:
                self._reader = Database(self.db_path)
            return self._reader

    def query_inspections(
        self,
        since: TimeArg = None,
        until: TimeArg = None,
        verdict: Verdict | str | None = None,
        limit: int | None = None,
    ) -> list[InspectionRow]:
        """Recorded frames, newest first (see `Database.query_inspections`)."""
        return self.reader().query_inspections(since, until, verdict, limit)

    def query_events(
        self,
        since: TimeArg = None,
        until: TimeArg = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[EventRow]:
        """Recorded events, newest first."""
        return self.reader().query_events(since, until, kind, limit)

    def shift_counts(self, shift: str | None = None) -> ShiftCounts:
        """A shift's counters (default: the current one), counts not yet written included.

        Counts from earlier runs of the station in the same shift are included: a restart in the
        middle of a shift continues its counters. StorageError when the records cannot be read.
        """
        key = shift or shift_key(time.time(), self.cfg.shift_hours)
        with self._lock:
            t = self._totals.get(key)
            if t is not None:
                return ShiftCounts(key, *t)
        # First read of this shift: no batch may be half-way between `_deltas` and the database.
        with self._flush_lock:
            stored = self.reader().shift_counts(key)
            with self._lock:
                t = self._totals.get(key)
                if t is None:
                    d = self._deltas.get(key, [0, 0, 0, 0])
                    base = (stored.inspected, stored.nok, stored.dropped, stored.unrecorded)
                    t = [a + b for a, b in zip(base, d, strict=True)]
                    while len(self._totals) >= MAX_SHIFT_TOTALS:
                        del self._totals[next(iter(self._totals))]
                    self._totals[key] = t
                return ShiftCounts(key, *t)

    def run_retention(self, now: float | None = None) -> RetentionReport:
        """One retention pass now, from the calling thread (own connection)."""
        return apply_retention(
            self.reader(), self.data_dir, self.cfg.retention_days, self.cfg.disk_budget_mb, now=now
        )

    # -- bookkeeping (self._lock held) ---------------------------------------------------------
    def _delta(self, shift: str, index: int, n: int, *, new: bool = True) -> None:
        # new=False: counts put back after a failed write; the running totals already hold them.
        d = self._deltas.get(shift)
        if d is None:
            d = self._deltas[shift] = [0, 0, 0, 0]
        d[index] += n
        t = self._totals.get(shift) if new else None
        if t is not None:
            t[index] += n

    def _lose_locked(self, shift: str, reason: str) -> None:
        self._unrecorded += 1
        self._delta(shift, 3, 1)
        if self._alarm_reason is None:
            self._alarm_reason = reason
            log.error("%s: results are not being recorded", reason)
        self._alarm_results += 1

    # -- the writer thread ---------------------------------------------------------------------
    def setup(self) -> None:
        """Open (create, migrate) the database in the writer thread."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._db = Database(self.db_path)
        self._next_retention = time.monotonic()

    def step(self) -> bool:
        """Write one batch (if any came), then run retention when it is due."""
        batch = self._collect(block=True)
        if batch or self._has_deltas():
            self._write(batch)
        if self.retention_interval_s > 0 and time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + self.retention_interval_s
            self._retention()
        return True

    def teardown(self) -> None:
        """Write what is still queued, refuse new work, close the database."""
        if self.error is not None:
            with self._lock:
                self._alarm_reason = f"records unavailable: {self.error}"
        try:
            self._drain()
            with self._lock:
                self._closed = True
            self._drain()  # what was put between the last drain and closing
            if self._db is not None and self._has_deltas():
                self._write([])
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
            with self._reader_lock:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None

    def _drain(self) -> None:
        while True:
            batch = self._collect(block=False)
            if not batch:
                return
            self._write(batch)

    def _collect(self, block: bool) -> list[_Item]:
        """Up to batch_rows items, waiting at most batch_seconds after the first one."""
        try:
            first = self._queue.get(timeout=IDLE_TICK_S) if block else self._queue.get_nowait()
        except queue.Empty:
            return []
        batch: list[_Item] = [first]
        deadline = time.monotonic() + self.batch_seconds
        while len(batch) < self.batch_rows and not isinstance(batch[-1], _Marker):
            remaining = deadline - time.monotonic() if block else 0.0
            try:
                if remaining > 0:
                    batch.append(self._queue.get(timeout=remaining))
                else:  # window over (or draining): take only what is already there
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _has_deltas(self) -> bool:
        with self._lock:
            return bool(self._deltas)

    def _take_deltas(self) -> list[tuple[Any, ...]]:
        with self._lock:
            rows = [(k, *v) for k, v in self._deltas.items()]
            self._deltas = {}
        return rows

    def _restore_deltas(self, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            for shift, *values in rows:
                for i, n in enumerate(values):
                    if n:
                        self._delta(shift, i, n, new=False)

    def _encode(self, frame: _Frame) -> tuple[bytes, bytes | None] | None:
        if frame.image is None:
            return None
        try:
            image = encode_image(frame.image)
            amap = None
            if frame.anomaly_map is not None:
                amap = encode_map(frame.anomaly_map, frame.threshold)
            return image, amap
        except Exception:  # a bad array must not cost the row
            log.exception("frame %d: image not archived (cannot encode)", frame.frame_id)
            with self._lock:
                self._images_unarchived += 1
            return None

    def _write(self, batch: list[_Item]) -> None:
        """One transaction for the batch; failures are counted, never raised."""
        frames = [i for i in batch if isinstance(i, _Frame)]
        events = [i for i in batch if isinstance(i, StationEvent)]
        markers = [i for i in batch if isinstance(i, _Marker)]
        flushing = False
        try:
            if self._db is None:
                self._fail(frames, events, [], self.error or StorageError("database not open"))
                return
            encoded = [self._encode(f) for f in frames]  # CPU work outside the write lock
            self._flush_lock.acquire()
            flushing = True
            deltas = self._take_deltas()
            written: list[Path] = []
            committed: list[Committed] = []
            file_error: OSError | None = None
            images = 0
            try:
                with self._db.transaction() as cur:
                    dirs: set[Path] = set()
                    for frame, enc in zip(frames, encoded, strict=True):
                        cur.execute(INSERT_INSPECTION, frame.row)
                        row_id = int(cur.lastrowid or 0)
                        rel_image: str | None = None
                        if enc is not None:
                            try:
                                rel_image, rel_map = self._archive(
                                    row_id, frame, enc, dirs, written
                                )
                                images += 1
                            except OSError as exc:
                                file_error = exc
                                rel_image = None
                            if rel_image is not None:
                                cur.execute(
                                    "UPDATE inspections SET image_path = ?, map_path = ? "
                                    "WHERE id = ?",
                                    (rel_image, rel_map, row_id),
                                )
                        committed.append(
                            Committed(row_id, frame.frame_id, frame.verdict, rel_image)
                        )
                    if events:
                        cur.executemany(INSERT_EVENT, [event_row(e) for e in events])
                    if deltas:
                        cur.executemany(UPSERT_COUNTS, deltas)
                    if self.durable_files:
                        for d in dirs:  # renames durable before the rows that name them commit
                            fsync_dir(d)
            except (sqlite3.Error, OSError) as exc:
                for p in written:  # files of rows that were rolled back
                    _remove(p)
                self._restore_deltas(deltas)
                flushing = False
                self._flush_lock.release()
                self._fail(frames, events, encoded, exc)
                return
            flushing = False
            self._flush_lock.release()
            self._succeeded(committed, len(events), images, encoded, file_error)
        finally:
            if flushing:
                self._flush_lock.release()
            held = sum(f.image_bytes for f in frames)
            if held:
                with self._lock:
                    self._pending_bytes -= held
            for m in markers:
                m.done.set()

    def _archive(
        self,
        row_id: int,
        frame: _Frame,
        enc: tuple[bytes, bytes | None],
        dirs: set[Path],
        written: list[Path],
    ) -> tuple[str, str | None]:
        rel_image, rel_map = archive_names(row_id, frame.verdict.value, frame.time)
        image_path = self.data_dir / rel_image
        folder = image_path.parent
        if folder not in dirs and not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            dirs.add(folder.parent)  # the new day folder's own entry must be durable too
        dirs.add(folder)
        write_atomic(image_path, enc[0], durable=self.durable_files)
        written.append(image_path)
        if enc[1] is None:
            return rel_image, None
        map_path = self.data_dir / rel_map
        write_atomic(map_path, enc[1], durable=self.durable_files)
        written.append(map_path)
        return rel_image, rel_map

    def _fail(
        self,
        frames: list[_Frame],
        events: list[StationEvent],
        encoded: list[tuple[bytes, bytes | None] | None],
        exc: BaseException,
    ) -> None:
        reason = "disk full" if is_disk_full(exc) else f"records not written ({exc})"
        with self._lock:
            for f in frames:
                self._unrecorded += 1
                self._delta(f.shift, 3, 1)
            self._events_unrecorded += len(events)
            lost_images = sum(1 for e in encoded if e is not None)
            self._images_unarchived += lost_images
            first = self._alarm_reason is None
            self._alarm_reason = reason
            self._alarm_results += len(frames)
            self._alarm_images += lost_images
        log_fn = log.error if first else log.debug
        log_fn("%s: %d results, %d events not recorded", reason, len(frames), len(events))

    def _succeeded(
        self,
        committed: list[Committed],
        n_events: int,
        images: int,
        encoded: list[tuple[bytes, bytes | None] | None],
        file_error: OSError | None,
    ) -> None:
        recovered: StationEvent | None = None
        with self._lock:
            self._recorded += len(committed)
            self._events_recorded += n_events
            self._images_archived += images
            failed_images = sum(1 for e in encoded if e is not None) - images
            self._images_unarchived += failed_images
            if file_error is not None:
                reason = "disk full" if is_disk_full(file_error) else f"archive: {file_error}"
                if self._alarm_reason is None:
                    log.error("%s: images not archived", reason)
                self._alarm_reason = reason
                self._alarm_images += failed_images
            elif self._alarm_reason is not None and committed:
                # Only a batch that really wrote results proves that writing works again.
                recovered = StationEvent(
                    kind="storage",
                    message=(
                        f"records written again after '{self._alarm_reason}': "
                        f"{self._alarm_results} results not recorded, "
                        f"{self._alarm_images} images not archived"
                    ),
                    data={
                        "reason": self._alarm_reason,
                        "unrecorded": self._alarm_results,
                        "images_unarchived": self._alarm_images,
                        "unrecorded_total": self._unrecorded,
                    },
                )
                self._alarm_reason = None
                self._alarm_results = 0
                self._alarm_images = 0
        if recovered is not None:
            log.warning("%s", recovered.message)
            self._write([recovered])
        if committed and self.on_commit is not None:
            try:
                self.on_commit(committed)
            except Exception:  # a listener's bug must not stop the records
                log.exception("on_commit listener failed")

    def _retention(self) -> None:
        if self._db is None:
            return
        try:
            self.last_retention = apply_retention(
                self._db, self.data_dir, self.cfg.retention_days, self.cfg.disk_budget_mb
            )
        except (StorageError, sqlite3.Error, OSError) as exc:
            log.error("retention failed: %s", exc)
