"""The recorder: one writer thread that turns inspection results and events into records.

The recorder is one of the line's sinks: the inspection thread calls `submit()` /
`submit_event()` and they never block for long. Results are never dropped to keep up: when the
bounded queue is full, or when the database cannot be written (a failed transaction, the
database not open), their rows go to the durable spool (`station.records.spool`, fsynced) and
the writer moves them into the database as soon as it can, in this run or the next. A result is
lost only when the spool cannot take it either (full, or its disk failing), or when it cannot be
stored at all (a score that is not a number); then it is counted and alarmed, never silent. The
writer takes up to `batch_rows` items or `batch_seconds` worth, whichever comes first, and writes
them in one transaction: at the line's 2 frames/s that is one fsync per frame at most, and a
burst costs one fsync per 50 rows.

Counting: a row's shift counts (inspected, NOK) are written in the transaction that inserts the
row, so after any crash the stored counters equal the stored rows (plus the results counted as
lost, which have no row). The operator's running totals also include what is still queued or
spooled, so they never lag the screen and never step back.

Storage failures (disk full, a broken disk, permissions) never stop the line: the `alarm` says
what happened, how many results wait in the spool and how many were lost; every later batch is
a retry, and the first batch that commits cleanly clears the alarm and records a "storage" event
with the counts. Images of spooled results are not kept (counted as not archived).

Archive: every NOK image with its anomaly map, and one OK image in `ok_sample_every` (see
`station.records.archive` for the formats). Retention runs in this thread every
`retention_interval_s`.
"""

from __future__ import annotations

import logging
import math
import os
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
)
from station.records.retention import RetentionReport, apply_retention
from station.records.shifts import shift_key
from station.records.spool import LEDGER, SPOOL_DIR, CountsLedger, Spool

log = logging.getLogger(__name__)

MAX_SHIFT_TOTALS = 8  # shifts whose running totals are kept (the current one and a few asked for)
IDLE_TICK_S = 0.2  # how long the writer waits for work before looking at stop / retention
REOPEN_S = 2.0  # while the database is busy at start, how often opening it is tried again
REPLAY_RETRY_S = 2.0  # after the spool could not be moved in, wait this long (or for a commit)
DISK_CHECK_S = 2.0  # how often the writer looks at the free space (a cheap statvfs)


@dataclass(frozen=True)
class Committed:
    """A frame that is now in the database (given to `on_commit` after the COMMIT returned)."""

    id: int
    frame_id: int
    verdict: Verdict
    image_path: str | None


@dataclass(frozen=True)
class RecorderStats:
    """Counts since the recorder was created. Every result submitted to it ends in exactly one
    of recorded / unrecorded / queued; `recovered` are an earlier run's spooled results that this
    one moved into the database (not in `submitted`)."""

    submitted: int
    recorded: int
    unrecorded: int
    queued: int  # waiting in memory or in the spool
    spooled: int  # results that went through the spool (queue full or database not writable)
    recovered: int
    events_recorded: int
    events_unrecorded: int
    images_archived: int
    images_unarchived: int  # rows recorded without their image (archive write failed)
    alarm: str | None


@dataclass
class _Frame:
    row: tuple[Any, ...]  # INSERT_INSPECTION's parameters
    shift: str
    image: np.ndarray | None = None  # only set when the image goes to the archive
    anomaly_map: np.ndarray | None = None
    image_bytes: int = 0  # memory held by image + map until the writer is done with them
    ours: bool = True  # submitted by this recorder (its pending counts hold it)
    from_spool: bool = False  # read back from a spool file (may be in the database already)

    @property
    def time(self) -> float:
        return float(self.row[0])

    @property
    def frame_id(self) -> int:
        return int(self.row[1])

    @property
    def threshold(self) -> float:
        return float(self.row[4])

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.row[5])

    @property
    def nok(self) -> int:
        return int(self.row[5] == Verdict.NOK.value)

    @property
    def check(self) -> int:
        return int(self.row[5] == Verdict.CHECK.value)

    @property
    def counts(self) -> tuple[int, int, int, int, int]:
        """What the row adds to its shift: inspected, NOK, dropped, unrecorded, CHECK."""
        return (1, self.nok, 0, 0, self.check)


@dataclass
class _Written:
    """What one transaction stored."""

    committed: list[Committed]
    images: int
    file_error: OSError | None


class _Marker:
    """Put in the queue by `flush()`: set once everything before it was handled."""

    def __init__(self) -> None:
        self.done = threading.Event()


_Item = _Frame | StationEvent | _Marker


ROW_FIELDS = 12  # INSERT_INSPECTION's parameters
Counts = tuple[int, int, int, int, int]  # inspected, nok, dropped, unrecorded, check: as stored


def _result_counts(result: InspectionResult) -> Counts:
    v = Verdict(result.verdict)
    return (1, int(v == Verdict.NOK), 0, 0, int(v == Verdict.CHECK))


def _storable(result: InspectionResult) -> str | None:
    """Why a result cannot be a row (its numbers are not finite), else None."""
    for name in ("score", "threshold", "latency_ms"):
        value = float(getattr(result, name))
        if not math.isfinite(value):
            return f"{name} is {value}"
    return None


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
        on_lost: Callable[[str, int], None] | None = None,
    ) -> None:
        """Prepare (nothing is opened until `start()`: the database opens in the writer thread).

        `max_pending_image_mb` bounds the memory held by images waiting for the archive: past it
        a result is still recorded, its image is counted as not archived (and alarmed).
        `on_commit` is called in the writer thread after each COMMIT with the new rows; keep it
        short (it delays the next batch). `on_lost(reason, lost so far)` is called, with the
        recorder's lock held (so it must not block), for each result that will have no row.
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
        self.on_lost = on_lost
        self.spool = Spool(self.data_dir / SPOOL_DIR, int(self.cfg.spool_mb * 1e6))
        # Counts no row carries, kept on disk while the database cannot take them (see
        # CountsLedger); `_ledger_id` names the ledger record whose counts are in `_deltas`.
        self._ledger = CountsLedger(self.data_dir / SPOOL_DIR / LEDGER)
        self._ledger_id: str | None = None
        self._ledger_dirty = False
        self._ledger_loaded = False
        self._run_id = f"{os.getpid()}-{time.time_ns()}"  # tells this run's spool records apart
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()  # guards the counters below; never held during I/O
        self._closed = False
        self._ok_seen = 0
        self._submitted = 0
        self._recorded = 0
        self._unrecorded = 0
        self._spooled = 0
        self._recovered = 0
        self._spool_waiting = 0  # this run's results in the spool, not yet in the database
        self._events_recorded = 0
        self._events_unrecorded = 0
        self._images_archived = 0
        self._images_unarchived = 0
        # shift -> [inspected, nok, dropped, unrecorded, check] still to be written for results
        # that have no row (lost) and for dropped frames; a row's own counts go with its INSERT.
        self._deltas: dict[str, list[int]] = {}
        # shift -> the same counts of this run's results submitted but not yet written or lost.
        self._pending: dict[str, list[int]] = {}
        # shift -> running totals (stored + not yet written), loaded once per shift, then kept up
        # at every submit: the operator's counters are read many times a second and must never
        # step back while a batch is between memory and its commit.
        self._totals: dict[str, list[int]] = {}
        self._flush_lock = threading.Lock()  # held from taking the deltas to their commit
        self._alarm_reason: str | None = None
        self._alarm_results = 0
        self._alarm_images = 0
        self._alarm_spooled = 0
        self._db: Database | None = None
        self._next_open = 0.0
        self._next_replay = 0.0  # monotonic; a failed replay is not retried on every tick
        self._replay_failing = False
        self._reader: Database | None = None
        self._reader_lock = threading.Lock()
        self._next_retention = 0.0
        self._next_disk_check = 0.0
        self.disk_warning: str | None = None  # set while the disk is nearly full
        self.last_retention: RetentionReport | None = None

    # -- the caller's side (any thread, never blocks for long) -----------------------------------
    def submit(self, result: InspectionResult) -> bool:
        """Record one result: queued, or spooled when the queue is full or the recorder closed;
        False when it is lost (the spool full or failing too, or not storable: counted and
        alarmed)."""
        shift = shift_key(result.timestamp, self.cfg.shift_hours)
        counts = _result_counts(result)
        flagged = result.verdict != Verdict.OK  # NOK and CHECK parts: image and map archived
        bad = _storable(result)
        with self._lock:
            self._submitted += 1
            if bad is not None:
                self._lost_locked(shift, counts, f"result not recordable ({bad})", ours=False)
                return False
            self._pend_locked(shift, counts, 1)
            row = (
                float(result.timestamp),
                int(result.frame_id),
                str(result.source),
                float(result.score),
                float(result.threshold),
                Verdict(result.verdict).value,
                float(result.latency_ms),
                str(result.model_version),
                result.label,
                result.part_id or None,
                None if result.check_threshold is None else float(result.check_threshold),
                result.product or None,
            )
            frame = _Frame(row=row, shift=shift)
            if self._closed:
                keep_image = False
            else:
                keep_image = self._keep_image_locked(flagged, result)
                if keep_image:
                    frame.image = result.image
                    frame.anomaly_map = result.anomaly_map
                    frame.image_bytes = result.image.nbytes + (
                        result.anomaly_map.nbytes if result.anomaly_map is not None else 0
                    )
                try:
                    self._queue.put_nowait(frame)
                    self._pending_bytes += frame.image_bytes
                    return True
                except queue.Full:
                    pass
        # The queue is full (or the writer gone): the row goes to the spool (file I/O, so outside
        # the lock), and from there into the database when the writer has caught up.
        return self._spool([frame], "records queue full (disk too slow)", images=int(keep_image))

    def _keep_image_locked(self, flagged: bool, result: InspectionResult) -> bool:
        if self.spool.released:
            # The disk filled and the spool's reserve was given back: that room is for records,
            # not for images (counted as not archived until the reserve is set aside again).
            self._images_unarchived += 1
            return False
        if flagged:
            keep = True
        else:
            every = self.cfg.ok_sample_every
            keep = every > 0 and self._ok_seen % every == 0
            self._ok_seen += 1
        if keep:
            amap = result.anomaly_map if flagged else None
            nbytes = result.image.nbytes + (amap.nbytes if amap is not None else 0)
            if self._pending_bytes + nbytes > self._max_pending_bytes:
                # The archive is far behind: keep the verdict, let this image go (counted).
                self._images_unarchived += 1
                if self._alarm_reason is None:
                    self._alarm_reason = "archive behind (disk too slow)"
                self._alarm_images += 1
                return False
        return keep

    def _spool(self, frames: list[_Frame], why: str, *, images: int = 0) -> bool:
        """Put this run's results into the spool; lost (counted) when it cannot take them."""
        try:
            self.spool.append([[self._run_id, *f.row] for f in frames])
        except StorageError as exc:
            with self._lock:
                for f in frames:
                    self._lost_locked(f.shift, f.counts, f"{why}; spool: {exc}")
                self._images_unarchived += images
                self._alarm_images += images
            return False
        with self._lock:
            self._spooled += len(frames)
            self._spool_waiting += len(frames)
            self._images_unarchived += images  # the spool keeps the verdict, not the picture
            if images:
                self._alarm_images += images
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
            self._delta(shift, (0, 0, n, 0, 0))
            self._show(shift, (0, 0, n, 0, 0))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted before this call is written (or counted as lost),
        what went to the spool included."""
        if not self.alive:
            return self._queue.empty()
        deadline = time.monotonic() + timeout
        while True:
            marker = _Marker()
            try:
                self._queue.put(marker, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                return False
            if not marker.done.wait(max(0.0, deadline - time.monotonic())):
                return False
            with self._lock:
                waiting = self._spool_waiting
            if not waiting or not self.alive:
                return True
            if time.monotonic() >= deadline:
                return False

    # -- what the status bar shows -------------------------------------------------------------
    @property
    def alarm(self) -> str | None:
        """E.g. 'disk full: 12 results not recorded'; None while records are written normally."""
        with self._lock:
            if self._alarm_reason is None:
                return None
            parts = [f"{self._alarm_results} results not recorded"]
            if self._alarm_spooled:
                parts.append(f"{self._alarm_spooled} waiting in the spool")
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
                spooled=self._spooled,
                recovered=self._recovered,
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

    def close_reader(self) -> None:
        """Close the read connection (it is opened again when needed)."""
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

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
        """A shift's counters (default: the current one), results not yet written included.

        Counts from earlier runs of the station in the same shift are included: a restart in the
        middle of a shift continues its counters. StorageError when the records cannot be read.
        """
        key = shift or shift_key(time.time(), self.cfg.shift_hours)
        with self._lock:
            t = self._totals.get(key)
            if t is not None:
                return ShiftCounts(key, *t)
        # First read of this shift: no batch may be half-way between memory and the database.
        with self._flush_lock:
            stored = self.reader().shift_counts(key)
            with self._lock:
                t = self._totals.get(key)
                if t is None:
                    d = self._deltas.get(key, [0, 0, 0, 0, 0])
                    p = self._pending.get(key, [0, 0, 0, 0, 0])
                    base = (
                        stored.inspected,
                        stored.nok,
                        stored.dropped,
                        stored.unrecorded,
                        stored.check,
                    )
                    t = [a + b + c for a, b, c in zip(base, d, p, strict=True)]
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
    def _delta(self, shift: str, values: Counts) -> None:
        """Counts still to be written to the database (no row carries them)."""
        d = self._deltas.setdefault(shift, [0, 0, 0, 0, 0])
        for i, n in enumerate(values):
            d[i] += n

    def _show(self, shift: str, values: Counts) -> None:
        """Counts added to the running totals the operator sees (when that shift is loaded)."""
        t = self._totals.get(shift)
        if t is not None:
            for i, n in enumerate(values):
                t[i] += n

    def _pend_locked(self, shift: str, counts: Counts, sign: int) -> None:
        """A result of this run submitted (+1) or settled (-1: written or lost)."""
        p = self._pending.setdefault(shift, [0, 0, 0, 0, 0])
        for i, n in enumerate(counts):
            p[i] += sign * n
        if sign > 0:
            self._show(shift, counts)
        elif not any(p):
            del self._pending[shift]

    def _lost_locked(self, shift: str, counts: Counts, reason: str, *, ours: bool = True) -> None:
        """A result that will have no row: counted as inspected and as not recorded."""
        if ours:
            self._pend_locked(shift, counts, -1)
        else:
            self._show(shift, counts)
        self._unrecorded += 1
        self._ledger_dirty = True  # the writer puts it on disk (never under this lock)
        self._delta(shift, (counts[0], counts[1], 0, 1, counts[4]))
        self._show(shift, (0, 0, 0, 1, 0))
        if self._alarm_reason is None:
            self._alarm_reason = reason
            log.error("%s: results are not being recorded", reason)
        self._alarm_results += 1
        if self.on_lost is not None:
            try:
                self.on_lost(reason, self._unrecorded)
            except Exception:
                log.exception("on_lost failed")

    # -- the writer thread ---------------------------------------------------------------------
    def setup(self) -> None:
        """Open (create, migrate) the database in the writer thread; move in what an earlier
        run left in the spool."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._next_retention = time.monotonic()
        if self.cfg.spool_mb > 0 and not self.spool.reserve():
            log.warning("records spool: no room to set its %.0f MB aside", self.cfg.spool_mb)
        self._open()
        self._ledger.prepare()

    def _open(self) -> None:
        """Open the database; a busy one (another process holding its lock longer than the
        timeout) is tried again in a moment, anything else is a failure of the recorder."""
        try:
            self._db = Database(self.db_path)
        except StorageError as exc:
            if "locked" not in str(exc):
                raise
            self._next_open = time.monotonic() + REOPEN_S
            with self._lock:
                if self._alarm_reason is None:
                    self._alarm_reason = f"records not written ({exc})"
            log.warning("records database busy, trying again in %.0f s: %s", REOPEN_S, exc)
            return
        self._load_ledger()
        self._replay_spool()

    def recover_spool(self) -> int:
        """Move what an earlier run left in the spool into the database now, from the calling
        thread (before `start()`, so that queries see it); returns the rows inserted."""
        if self.alive:
            raise RuntimeError("recover_spool() runs before start()")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._db = Database(self.db_path)
        try:
            self._load_ledger()
            return self._replay_spool()
        finally:
            self._db.close()
            self._db = None

    def step(self) -> bool:
        """Write one batch (if any came), then what waits in the spool, then retention."""
        if self._db is None and time.monotonic() >= self._next_open:
            self._open()
        batch = self._collect(block=True)
        if batch or self._has_deltas():
            self._write(batch)
        if self._ledger_dirty:
            self._save_ledger()
        with self._lock:
            waiting = self._spool_waiting
        if (
            waiting
            and self._db is not None
            and self._queue.qsize() < self.batch_rows
            and time.monotonic() >= self._next_replay
        ):
            self._replay_spool()
        if self.retention_interval_s > 0 and time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + self.retention_interval_s
            self._retention()
        if time.monotonic() >= self._next_disk_check:
            self._next_disk_check = time.monotonic() + DISK_CHECK_S
            self._check_disk()
        return True

    def _check_disk(self) -> None:
        """Warn before the disk is full: an alarm while below `disk_warning_mb`, an event when
        it starts and when it ends."""
        if self.spool.released and self.cfg.spool_mb > 0:
            self.spool.reserve()  # the room came back: set it aside again (archiving resumes)
        free, limit = self.disk_free_mb(), self.cfg.disk_warning_mb
        if free is None:
            return
        was = self.disk_warning is not None
        low = free < limit
        self.disk_warning = f"disk nearly full: {free:.0f} MB free" if low else None
        if low != was:
            message = (
                f"disk nearly full: {free:.0f} MB free (warning below {limit:.0f} MB)"
                if low
                else f"disk space back: {free:.0f} MB free"
            )
            (log.warning if low else log.info)("%s", message)
            self.submit_event(
                StationEvent(kind="storage", message=message, data={"free_mb": round(free, 1)})
            )

    def teardown(self) -> None:
        """Write what is still queued and spooled, refuse new work, close the database."""
        if self.error is not None:
            with self._lock:
                self._alarm_reason = f"records unavailable: {self.error}"
        try:
            self._drain()
            with self._lock:
                self._closed = True  # from now on submit() spools: the next start moves it in
            self._drain()  # what was put between the last drain and closing
            if self._db is not None:
                self._replay_spool()
                if self._has_deltas():
                    self._write([])
        finally:
            if self._ledger_dirty:
                self._save_ledger()
            self.spool.close()
            if self._db is not None:
                self._db.close()
                self._db = None
            self.close_reader()

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

    def _take_deltas(self) -> dict[str, list[int]]:
        with self._lock:
            rows, self._deltas = self._deltas, {}
        return rows

    def _restore_deltas(self, taken: dict[str, list[int]]) -> None:
        with self._lock:
            for shift, v in taken.items():
                self._delta(shift, (v[0], v[1], v[2], v[3], v[4]))
            if taken:
                self._ledger_dirty = True  # not committed: on disk until they are

    def _load_ledger(self) -> None:
        """Once, with the database open: counts an earlier run could not store go into this
        run's deltas (unless the database already noted their record)."""
        if self._ledger_loaded or self._db is None:
            return
        self._ledger_loaded = True
        record = self._ledger.read()
        if record is None:
            return
        name = str(record["id"])
        try:
            with self._db.transaction() as cur:
                done = cur.execute("SELECT 1 FROM spooled_files WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("records: counts ledger not checked (%s); kept for the next start", exc)
            return
        if done:
            self._ledger.write(None)
            return
        with self._lock:
            for shift, v in dict(record.get("counts", {})).items():
                self._delta(str(shift), tuple(int(x) for x in v))  # type: ignore[arg-type]
            self._ledger_id = name
        log.warning("records: counts of an earlier run brought in from the ledger: %s", record)

    def _save_ledger(self) -> None:
        """Write the counts still waiting for the database (writer thread, no transaction in
        flight), under a new id; an empty ledger once there are none."""
        with self._lock:
            self._ledger_dirty = False
            counts = {k: list(v) for k, v in self._deltas.items()}
        record = (
            {"id": f"counts-{self._run_id}-{time.time_ns()}", "counts": counts} if counts else None
        )
        if self._ledger.write(record):
            self._ledger_id = None if record is None else str(record["id"])

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

    def _transaction(
        self,
        db: Database,
        frames: list[_Frame],
        encoded: list[tuple[bytes, bytes | None] | None],
        events: list[StationEvent],
        spool_file: str | None = None,
    ) -> tuple[_Written, list[_Frame]]:
        """One transaction: the rows (and their archive files), the events, the rows' shift
        counts with the counts waiting in `_deltas`, and the note of a spool file moved in.

        Returns what was written and the frames it covered (none when the spool file was moved
        in before). On a database or file error everything is rolled back, the written files
        removed, the deltas put back, and the error raised.
        """
        written: list[Path] = []
        with self._flush_lock:
            deltas = self._take_deltas()
            counts = {k: list(v) for k, v in deltas.items()}
            ledger = self._ledger_id if deltas else None  # its counts are all in `deltas`
            try:
                with db.transaction() as cur:
                    if (
                        spool_file is not None
                        and cur.execute(
                            "SELECT 1 FROM spooled_files WHERE name = ?", (spool_file,)
                        ).fetchone()
                    ):
                        frames, encoded = [], []
                    dirs: set[Path] = set()
                    result, inserted = self._insert(cur, frames, encoded, written, dirs, counts)
                    if events:
                        cur.executemany(INSERT_EVENT, [event_row(e) for e in events])
                    if counts:
                        cur.executemany(UPSERT_COUNTS, [(k, *v) for k, v in counts.items()])
                    for name, n in ((spool_file, len(result.committed)), (ledger, 0)):
                        if name is not None:
                            cur.execute(
                                "INSERT OR IGNORE INTO spooled_files (name, rows, time) "
                                "VALUES (?, ?, ?)",
                                (name, n, time.time()),
                            )
                    if self.durable_files:
                        for d in dirs:  # renames durable before the rows that name them
                            fsync_dir(d)
            except (sqlite3.Error, OSError):
                for p in written:  # files of rows that were rolled back
                    try:
                        _remove(p)
                    except OSError as exc:  # an orphan file; retention sweeps it later
                        log.warning("%s not removed after a rollback: %s", p, exc)
                self._restore_deltas(deltas)
                raise
            if ledger is not None and ledger == self._ledger_id:
                self._ledger_id = None
                self._ledger_dirty = True  # stored: the ledger empties (or holds what came since)
            self._settled(frames, inserted)
        return result, frames

    def _insert(
        self,
        cur: sqlite3.Cursor,
        frames: list[_Frame],
        encoded: list[tuple[bytes, bytes | None] | None],
        written: list[Path],
        dirs: set[Path],
        counts: dict[str, list[int]],
    ) -> tuple[_Written, list[bool]]:
        """INSERT the frames (and archive their images) in the open transaction; their shift
        counts go into `counts`. Returns what was written and which frames got a new row."""
        out = _Written([], 0, None)
        inserted: list[bool] = []
        for frame, enc in zip(frames, encoded, strict=True):
            cur.execute(INSERT_INSPECTION, frame.row)
            if cur.rowcount != 1:  # its part id is stored already
                inserted.append(False)
                continue
            inserted.append(True)
            c = counts.setdefault(frame.shift, [0, 0, 0, 0, 0])
            for i, n in enumerate(frame.counts):
                c[i] += n
            row_id = int(cur.lastrowid or 0)
            rel_image: str | None = None
            if enc is not None:
                try:
                    rel_image, rel_map = self._archive(row_id, frame, enc, dirs, written)
                    out.images += 1
                except OSError as exc:
                    out.file_error = exc
                    rel_image = None
                if rel_image is not None:
                    cur.execute(
                        "UPDATE inspections SET image_path = ?, map_path = ? WHERE id = ?",
                        (rel_image, rel_map, row_id),
                    )
            out.committed.append(Committed(row_id, frame.frame_id, frame.verdict, rel_image))
        return out, inserted

    def _settled(self, frames: list[_Frame], inserted: list[bool]) -> None:
        """After COMMIT, still under the flush lock: these rows left the pending counts."""
        with self._lock:
            for frame, new in zip(frames, inserted, strict=True):
                c = frame.counts
                if frame.ours and new:
                    self._pend_locked(frame.shift, c, -1)
                    self._recorded += 1
                elif frame.ours and frame.from_spool:  # in the database before: nothing new
                    self._pend_locked(frame.shift, c, -1)
                    self._show(frame.shift, (-c[0], -c[1], 0, 0, -c[4]))
                    self._recorded += 1
                elif frame.ours:  # a live row whose part id is taken: a numbering fault
                    self._lost_locked(frame.shift, c, "duplicate part id")
                    log.error(
                        "frame %d: part id %s is stored already", frame.frame_id, frame.row[9]
                    )
                elif new:  # an earlier run's result: not in this run's totals yet
                    self._show(frame.shift, c)
                    self._recovered += 1

    def _write(self, batch: list[_Item]) -> None:
        """One transaction for the batch; on failure its results go to the spool, its events
        are counted as not recorded. Never raises."""
        frames = [i for i in batch if isinstance(i, _Frame)]
        events = [i for i in batch if isinstance(i, StationEvent)]
        markers = [i for i in batch if isinstance(i, _Marker)]
        try:
            db = self._db
            if db is None:
                self._fail(frames, events, [], self.error or StorageError("database not open"))
                return
            encoded = [self._encode(f) for f in frames]  # CPU work outside the write lock
            try:
                result, _ = self._transaction(db, frames, encoded, events)
            except (sqlite3.Error, OSError) as exc:
                self._fail(frames, events, encoded, exc)
                return
            self._succeeded(
                result.committed, len(events), result.images, encoded, result.file_error
            )
        finally:
            held = sum(f.image_bytes for f in frames)
            if held:
                with self._lock:
                    self._pending_bytes -= held
            for m in markers:
                m.done.set()

    def _replay_spool(self) -> int:
        """Move closed spool files into the database, one transaction a file; returns rows.

        A file that cannot be written now stays for the next try (its rows are durable there);
        a file already noted in the database (a crash before its removal) is just removed.
        """
        db = self._db
        if db is None:
            return 0
        total = 0
        for path in self.spool.take():
            try:
                records, torn = self.spool.read(path)
            except OSError as exc:
                log.error("records spool %s unreadable: %s", path, exc)
                continue
            if torn:
                log.warning("records spool %s: %d torn bytes at its end ignored", path, torn)
            frames = [
                _Frame(
                    # Older spool lines lack newer columns (check_threshold, product): NULL.
                    row=tuple(r[1:]) + (None,) * (ROW_FIELDS - len(r) + 1),
                    shift=shift_key(float(r[1]), self.cfg.shift_hours),
                    ours=r[0] == self._run_id,
                    from_spool=True,
                )
                for r in records
            ]
            try:
                result, frames = self._transaction(
                    db, frames, [None] * len(frames), [], spool_file=path.name
                )
            except (sqlite3.Error, OSError) as exc:
                (log.debug if self._replay_failing else log.error)(
                    "records spool %s not moved into the database yet: %s", path, exc
                )
                self._replay_failing = True
                self._next_replay = time.monotonic() + REPLAY_RETRY_S
                return total
            self._replay_failing = False
            with self._lock:
                ours = sum(1 for f in frames if f.ours)
                self._spool_waiting = max(0, self._spool_waiting - ours)
            total += len(result.committed)
            self.spool.remove(path)
            if result.committed and self.on_commit is not None:
                try:
                    self.on_commit(result.committed)
                except Exception:
                    log.exception("on_commit listener failed")
        return total

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
        """The database did not take the batch: its results go to the spool (lost only when it
        cannot take them), its events are counted as not recorded."""
        reason = "disk full" if is_disk_full(exc) else f"records not written ({exc})"
        images = sum(1 for e in encoded if e is not None)
        with self._lock:
            first = self._alarm_reason is None
            self._alarm_reason = reason
            self._events_unrecorded += len(events)
        if frames and self._spool(frames, reason, images=images):
            with self._lock:
                self._alarm_spooled += len(frames)
        log_fn = log.error if first else log.debug
        log_fn("%s: %d results spooled or lost, %d events not recorded", reason, len(frames),
               len(events))  # fmt: skip

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
                        f"{self._alarm_spooled} kept in the spool, "
                        f"{self._alarm_images} images not archived"
                    ),
                    data={
                        "reason": self._alarm_reason,
                        "unrecorded": self._alarm_results,
                        "spooled": self._alarm_spooled,
                        "images_unarchived": self._alarm_images,
                        "unrecorded_total": self._unrecorded,
                    },
                )
                self._alarm_reason = None
                self._alarm_results = 0
                self._alarm_images = 0
                self._alarm_spooled = 0
        if recovered is not None:
            log.warning("%s", recovered.message)
            self._write([recovered])
        if committed and self.on_commit is not None:
            try:
                self.on_commit(committed)
            except Exception:  # a listener's bug must not stop the records
                log.exception("on_commit listener failed")

    def _retention(self) -> None:
        if self.cfg.spool_mb > 0:
            self.spool.reserve()  # given back while the disk was full: set aside again
        if self._db is None:
            return
        try:
            self.last_retention = apply_retention(
                self._db, self.data_dir, self.cfg.retention_days, self.cfg.disk_budget_mb
            )
        except (StorageError, sqlite3.Error, OSError) as exc:
            log.error("retention failed: %s", exc)
