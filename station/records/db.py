"""The records database: one SQLite file in WAL mode, typed rows in and out.

Durability: `journal_mode=WAL` lets readers (GUI, `station log`) work while the recorder writes,
and `synchronous=FULL` makes every COMMIT fsync the WAL before it returns. With NORMAL, WAL
commits are only synced at checkpoints: they survive a crash of the process, but a power loss
can take back transactions the recorder already reported as committed. A line PC that is
switched off at the end of the shift must not lose the last parts, so FULL it is; the cost is
one fsync per batch (the recorder batches rows to keep that small).

A `Database` object may be used from several threads (one lock around the connection); each
thread that needs its own pace (the recorder's writer, a GUI reader) should open its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from station.core.errors import StorageError
from station.core.result import Counters, StationEvent, StationState, Verdict
from station.records.migrations import LATEST_VERSION, migrate, schema_version

log = logging.getLogger(__name__)

DB_NAME = "station.db"
ARCHIVE_DIR = "archive"
BUSY_TIMEOUT_MS = 5000  # a reader's checkpoint or a QA override may hold the lock briefly

TimeArg = datetime | float | int | None


def db_path(data_dir: str | Path) -> Path:
    """Where the database lives inside a data directory."""
    return Path(data_dir) / DB_NAME


def to_epoch(value: TimeArg) -> float | None:
    """Epoch seconds from a datetime (naive = local time) or a number; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _json_default(value: Any) -> Any:
    # Event data often carries numpy scalars/arrays (scores, statistics).
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def event_json(data: dict[str, Any]) -> str:
    """Event data as stored: JSON, numpy values converted, anything else as its str()."""
    return json.dumps(data, default=_json_default, separators=(",", ":"))


@dataclass(frozen=True)
class InspectionRow:
    """One recorded frame. Paths are relative to the data directory; None once retention ran."""

    id: int
    time: float
    frame_id: int
    source: str
    score: float
    threshold: float
    verdict: Verdict
    latency_ms: float
    model_version: str
    label: str | None = None
    image_path: str | None = None
    map_path: str | None = None
    override_verdict: Verdict | None = None
    override_operator: str | None = None
    override_time: float | None = None
    part_id: str | None = None  # e.g. DEMO-20261201-000123; None on rows from before it existed
    check_threshold: float | None = None  # the check band's lower limit when it had one
    product: str | None = None  # the product whose model judged it
    disposition: str | None = None  # the latest disposition (see station.records.dispositions)

    @property
    def when(self) -> datetime:
        """The frame time as a local, timezone-aware datetime."""
        return datetime.fromtimestamp(self.time).astimezone()

    @property
    def final_verdict(self) -> Verdict:
        """The QA override where there is one, else the station's verdict."""
        return self.override_verdict or self.verdict


@dataclass(frozen=True)
class EventRow:
    """One recorded event."""

    id: int
    time: float
    kind: str
    message: str
    state: StationState | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def when(self) -> datetime:
        """The event time as a local, timezone-aware datetime."""
        return datetime.fromtimestamp(self.time).astimezone()


@dataclass(frozen=True)
class ShiftCounts:
    """The counters of one shift as stored."""

    shift: str
    inspected: int = 0
    nok: int = 0
    dropped: int = 0
    unrecorded: int = 0
    check: int = 0

    def to_counters(self, line: Counters | None = None) -> Counters:
        """The operator-screen record: these shift counts, with throughput and latency taken
        from `line` (the running line's own counters; zeros without it)."""
        return dataclasses.replace(
            line or Counters(),
            inspected=self.inspected,
            nok=self.nok,
            check=self.check,
            dropped=self.dropped,
            unrecorded=self.unrecorded,
            shift=self.shift,
        )


INSPECTION_COLUMNS = (
    "id, time, frame_id, source, score, threshold, verdict, latency_ms, model_version, label, "
    "image_path, map_path, override_verdict, override_operator, override_time, part_id, "
    "check_threshold, product, disposition"
)

# A part id already stored inserts nothing (the caller checks rowcount): a spooled row moved in
# again, or a numbering fault the recorder counts and alarms. Only that conflict is passed over;
# any other constraint (a NULL score, a verdict it does not know) fails the statement loudly.
INSERT_INSPECTION = (
    "INSERT INTO inspections (time, frame_id, source, score, threshold, verdict, latency_ms, "
    "model_version, label, part_id, check_threshold, product) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (part_id) WHERE part_id IS NOT NULL DO NOTHING"
)
INSERT_EVENT = "INSERT INTO events (time, kind, message, state, data) VALUES (?, ?, ?, ?, ?)"
UPSERT_COUNTS = (
    "INSERT INTO shift_counters (shift, inspected, nok, dropped, unrecorded, checks) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (shift) DO UPDATE SET "
    "inspected = inspected + excluded.inspected, nok = nok + excluded.nok, "
    "dropped = dropped + excluded.dropped, unrecorded = unrecorded + excluded.unrecorded, "
    "checks = checks + excluded.checks"
)


def inspection_row(row: tuple[Any, ...]) -> InspectionRow:
    return InspectionRow(
        id=row[0],
        time=row[1],
        frame_id=row[2],
        source=row[3],
        score=row[4],
        threshold=row[5],
        verdict=Verdict(row[6]),
        latency_ms=row[7],
        model_version=row[8],
        label=row[9],
        image_path=row[10],
        map_path=row[11],
        override_verdict=Verdict(row[12]) if row[12] else None,
        override_operator=row[13],
        override_time=row[14],
        part_id=row[15],
        check_threshold=row[16],
        product=row[17],
        disposition=row[18],
    )


def _event(row: tuple[Any, ...]) -> EventRow:
    try:
        data = json.loads(row[5]) if row[5] else {}
    except ValueError:
        data = {"raw": row[5]}
    state: StationState | None = None
    if row[4]:
        try:
            state = StationState(row[4])
        except ValueError:  # a state name from a newer station: keep the row readable
            state = None
    return EventRow(id=row[0], time=row[1], kind=row[2], message=row[3], state=state, data=data)


def is_disk_full(exc: BaseException) -> bool:
    """True for 'no space left' from the OS or SQLite's 'database or disk is full'."""
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return True
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == 13


class Database:
    """A connection to `station.db` with the station's pragmas, schema and typed queries."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """Open (and with `create`, create and migrate) the database at `path`.

        Raises StorageError when the file is missing (create=False), is not a database, or has a
        schema newer than this station.
        """
        self.path = Path(path)
        self._lock = threading.RLock()
        if not create and not self.path.is_file():
            raise StorageError(f"{self.path}: no records database here")
        try:
            new = create and not self.path.exists()
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every transaction in this module is an explicit BEGIN ... COMMIT.
            self.conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            if new:
                # Owner only: it holds the PIN hashes. SQLite gives its -wal / -shm files the
                # database file's mode.
                os.chmod(self.path, 0o600)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"{self.path}: cannot open the records database: {exc}") from exc
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._retry_locked("PRAGMA journal_mode")
            if str(mode).lower() != "wal":
                mode = self._retry_locked("PRAGMA journal_mode = WAL")
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"{self.path}: the filesystem does not support SQLite's WAL journal "
                    f"(got '{mode}'); put the data directory on a local disk"
                )
            self.conn.execute("PRAGMA synchronous = FULL")  # see the module docstring: power loss
            self.conn.execute("PRAGMA foreign_keys = ON")
            if create:
                migrate(self.conn, str(self.path))
            else:
                version = schema_version(self.conn)
                if version != LATEST_VERSION:
                    migrate(self.conn, str(self.path))
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StorageError(f"{self.path}: not a usable records database: {exc}") from exc
        except StorageError:
            self.conn.close()
            raise

    def _retry_locked(self, sql: str) -> Any:
        # Switching a new file to WAL while another connection does the same (the recorder and
        # a reader opening a fresh data directory together) fails with "database is locked"
        # without waiting for the busy timeout; it is safe to retry.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return self.conn.execute(sql).fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (a clean close checkpoints the WAL into the main file)."""
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT under the lock; any exception rolls back and propagates."""
        with self._lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def fetch(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read statement and return all rows (StorageError on failure)."""
        with self._lock:
            try:
                return self.conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: query failed: {exc}") from exc

    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock:
            return schema_version(self.conn)

    def integrity_check(self) -> str:
        """SQLite's own consistency check: 'ok', or the problems it found."""
        rows = self.fetch("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    # -- queries ---------------------------------------------------------------------------
    def query_inspections(
        self,
        since: TimeArg = None,
        until: TimeArg = None,
        verdict: Verdict | str | None = None,
        limit: int | None = None,
    ) -> list[InspectionRow]:
        """Recorded frames with since <= time < until, newest first; `verdict` filters the
        station's verdict ('OK' / 'NOK'), not QA overrides."""
        verdict_value = (
            None
            if verdict is None
            else Verdict(str(getattr(verdict, "value", verdict)).upper()).value
        )
        sql, params = windowed(
            f"SELECT {INSPECTION_COLUMNS} FROM inspections",
            since,
            until,
            {"verdict": verdict_value},
            limit,
        )
        return [inspection_row(r) for r in self.fetch(sql, params)]

    def get_inspection(self, row_id: int) -> InspectionRow | None:
        """One recorded frame by id."""
        rows = self.fetch(f"SELECT {INSPECTION_COLUMNS} FROM inspections WHERE id = ?", [row_id])
        return inspection_row(rows[0]) if rows else None

    def get_part(self, part_id: str) -> InspectionRow | None:
        """One recorded frame by its part id."""
        rows = self.fetch(
            f"SELECT {INSPECTION_COLUMNS} FROM inspections WHERE part_id = ?", [part_id]
        )
        return inspection_row(rows[0]) if rows else None

    def max_part_sequence(self, prefix: str) -> int:
        """The highest sequence number of the part ids that start with `prefix` (0 if none).

        `prefix` is e.g. 'DEMO-20261201-'; the range query runs on the part-id index.
        """
        rows = self.fetch(
            "SELECT max(CAST(substr(part_id, ?) AS INTEGER)) FROM inspections "
            "WHERE part_id >= ? AND part_id < ?",
            [len(prefix) + 1, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)],
        )
        return int(rows[0][0] or 0)

    def count_inspections(self) -> int:
        """How many frames are recorded."""
        return int(self.fetch("SELECT count(*) FROM inspections")[0][0])

    def query_events(
        self,
        since: TimeArg = None,
        until: TimeArg = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[EventRow]:
        """Recorded events with since <= time < until, newest first."""
        sql, params = windowed(
            "SELECT id, time, kind, message, state, data FROM events",
            since,
            until,
            {"kind": kind},
            limit,
        )
        return [_event(r) for r in self.fetch(sql, params)]

    def shift_counts(self, shift: str) -> ShiftCounts:
        """The counters of one shift ('2026-11-21/06'); zeros when nothing was counted."""
        rows = self.fetch(
            "SELECT shift, inspected, nok, dropped, unrecorded, checks FROM shift_counters "
            "WHERE shift = ?",
            [shift],
        )
        return ShiftCounts(*rows[0]) if rows else ShiftCounts(shift)

    def all_shift_counts(self, limit: int | None = None) -> list[ShiftCounts]:
        """Counters of every shift, newest first."""
        sql = "SELECT shift, inspected, nok, dropped, unrecorded, checks FROM shift_counters"
        sql += " ORDER BY shift DESC"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        return [ShiftCounts(*r) for r in self.fetch(sql, params)]

    # -- writes outside the recorder -----------------------------------------------------------
    def set_override(
        self, row_id: int, verdict: Verdict | str, operator: str, when: TimeArg = None
    ) -> None:
        """Record a QA decision on a frame (the station's own verdict is kept beside it)."""
        v = Verdict(str(getattr(verdict, "value", verdict)).upper())
        t = to_epoch(when) or datetime.now().timestamp()
        try:
            with self.transaction() as cur:
                cur.execute(
                    "UPDATE inspections SET override_verdict = ?, override_operator = ?, "
                    "override_time = ? WHERE id = ?",
                    (v.value, operator, t, row_id),
                )
                if cur.rowcount != 1:
                    raise StorageError(f"{self.path}: no inspection with id {row_id}")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: override not saved: {exc}") from exc

    def add_event(self, event: StationEvent) -> int:
        """Write one event now (outside the recorder, e.g. from a command); returns its id."""
        try:
            with self.transaction() as cur:
                cur.execute(INSERT_EVENT, event_row(event))
                return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: event not saved: {exc}") from exc


def writable(path: str | Path) -> str | None:
    """Why the database at `path` cannot take a write now, or None when it can: a row written
    and rolled back (BEGIN IMMEDIATE alone succeeds on a read-only file in WAL mode)."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1e3)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            probe = StationEvent(kind="probe", message="write check", time=0.0)
            conn.execute(INSERT_EVENT, event_row(probe))
        finally:
            conn.execute("ROLLBACK")
        return None
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()


def set_aside_if_damaged(path: str | Path) -> tuple[Path, str] | None:
    """Check an existing database (`PRAGMA quick_check`, read-only) before anything writes to
    it; a damaged one is renamed, with its -wal and -shm, to `<name>.damaged-<time>`.

    Returns (where it went, what the check said), or None for a sound database or none at all.
    Only the station holding the data directory's lock may call this: a reader elsewhere would
    move a file another process has open.
    """
    path = Path(path).absolute()  # a file URI needs an absolute path
    if not path.is_file():
        return None
    reason = ""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1e3)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
        found = [str(r[0]) for r in rows]
        if found != ["ok"]:
            reason = "; ".join(found[:3]) + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")
    except sqlite3.OperationalError as exc:
        # Cannot open or read it (permissions, no file descriptors, I/O, busy): not proof of
        # damage, and moving a sound database aside would take its users and audit trail.
        raise StorageError(f"{path}: cannot check the records database: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        reason = str(exc)  # "file is not a database", "database disk image is malformed"
    if not reason:
        return None
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{aside}{suffix}"))
    log.error("records database %s failed its check (%s); moved to %s", path, reason, aside)
    return aside, reason


def event_row(event: StationEvent) -> tuple[Any, ...]:
    """The INSERT_EVENT parameters for an event."""
    state = event.state.value if event.state is not None else None
    return (event.time, event.kind, event.message, state, event_json(event.data))


def windowed(
    select: str,
    since: TimeArg,
    until: TimeArg,
    equals: dict[str, Any],
    limit: int | None,
    *,
    order: str = "time DESC, id DESC",
) -> tuple[str, list[Any]]:
    """`select` limited to since <= time < until and column = value filters, in `order`
    (newest first by default)."""
    where, params = conditions(since, until, equals)
    sql = select + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(0, int(limit)))
    return sql, params


def conditions(
    since: TimeArg,
    until: TimeArg,
    equals: dict[str, Any] | None = None,
    *,
    time_column: str = "time",
) -> tuple[list[str], list[Any]]:
    """WHERE terms and their parameters: since <= time < until, and column = value for each
    value that is not None."""
    where: list[str] = []
    params: list[Any] = []
    lo, hi = to_epoch(since), to_epoch(until)
    if lo is not None:
        where.append(f"{time_column} >= ?")
        params.append(lo)
    if hi is not None:
        where.append(f"{time_column} < ?")
        params.append(hi)
    for column, value in (equals or {}).items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params
