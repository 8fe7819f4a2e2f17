"""The audit trail: who changed what, when, from what to what, and why. Append-only, chained.

Every row carries `hash = sha256(previous row's hash + this row's content)`, the content being
its id and every column. Editing a row breaks its own hash; deleting one leaves a gap in the ids
(AUTOINCREMENT never reuses one) and breaks the next row's chain; deleting the newest rows is
caught by `audit.head`, a file beside the database that names the newest row and its hash. A
tamperer has to rewrite the whole chain after the edit and the head file too: tamper-evident,
not tamper-proof (whoever owns the data directory can do both; keep a copy off the station).

Appends run inside an IMMEDIATE transaction (read the last hash, insert), so two processes (the
running station and a `station users` command) never chain onto the same row; a change and its
audit row can share one transaction (`append_in`), so neither stands without the other. The
head file is advanced under its own lock, so it only ever moves forward.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from station.core.errors import StorageError
from station.core.files import write_atomic
from station.records.db import Database, TimeArg, windowed

HEAD_FILE = "audit.head"
GENESIS = "0" * 64
COLUMNS = "id, time, user, role, action, object, before, after, reason, via, hash"


@dataclass(frozen=True)
class AuditRow:
    """One audited action."""

    id: int
    time: float
    user: str
    role: str
    action: str  # e.g. "login", "pause", "threshold", "denied"
    object: str = ""  # what it acted on: a product, a model version, a user, a part id
    before: str | None = None
    after: str | None = None
    reason: str = ""
    via: str = ""  # "touchscreen", "cli", "http"
    hash: str = ""

    @property
    def when(self) -> datetime:
        """The time as a local, timezone-aware datetime."""
        return datetime.fromtimestamp(self.time).astimezone()


def row_hash(prev: str, row: AuditRow) -> str:
    """The chain hash of `row` after a row whose hash is `prev`."""
    content = [
        row.id,
        repr(float(row.time)),  # repr: the exact float, whatever JSON would round
        row.user,
        row.role,
        row.action,
        row.object,
        row.before,
        row.after,
        row.reason,
        row.via,
    ]
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _row(r: tuple[Any, ...]) -> AuditRow:
    return AuditRow(*r)


@dataclass(frozen=True)
class Verification:
    """What `verify()` found: ok, the rows checked, and the first problem in words."""

    ok: bool
    rows: int
    problem: str = ""
    bad_id: int | None = None


class AuditTrail:
    """Appends to and reads the `audit` table of a records database."""

    def __init__(self, db: Database, data_dir: str | Path) -> None:
        self.db = db
        self.head_path = Path(data_dir) / HEAD_FILE

    def append(self, **row: Any) -> AuditRow:
        """Write one row in its own transaction, chained to the newest (see `append_in`)."""
        try:
            with self.db.transaction() as cur:
                written = self.append_in(cur, **row)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.db.path}: audit row not written: {exc}") from exc
        self.advance_head(written)
        return written

    def append_in(
        self,
        cur: sqlite3.Cursor,
        *,
        user: str,
        role: str,
        action: str,
        object: str = "",
        before: Any = None,
        after: Any = None,
        reason: str = "",
        via: str = "",
        when: float | None = None,
    ) -> AuditRow:
        """Write one row inside the caller's open (IMMEDIATE) transaction; after its COMMIT the
        caller calls `advance_head(row)`."""
        t = time.time() if when is None else float(when)
        last = cur.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        seq = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        prev = last[1] if last else GENESIS
        # The id AUTOINCREMENT would give: one past the highest ever used.
        next_id = max(int(seq[0]) if seq else 0, int(last[0]) if last else 0) + 1
        row = AuditRow(
            id=next_id,
            time=t,
            user=str(user),
            role=str(role),
            action=str(action),
            object=str(object),
            before=_text(before),
            after=_text(after),
            reason=str(reason),
            via=str(via),
        )
        row = AuditRow(**{**row.__dict__, "hash": row_hash(prev, row)})
        cur.execute(
            f"INSERT INTO audit ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.time,
                row.user,
                row.role,
                row.action,
                row.object,
                row.before,
                row.after,
                row.reason,
                row.via,
                row.hash,
            ),
        )
        return row

    def rows(
        self, since: TimeArg = None, until: TimeArg = None, limit: int | None = None
    ) -> list[AuditRow]:
        """Rows with since <= time < until, oldest first."""
        sql, params = windowed(f"SELECT {COLUMNS} FROM audit", since, until, {}, limit, order="id")
        return [_row(r) for r in self.db.fetch(sql, params)]

    def read_head(self) -> tuple[int, str] | None:
        """(id, hash) of the newest row the head file names; None when there is no file."""
        try:
            text = self.head_path.read_text().split()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{self.head_path}: cannot be read: {exc}") from exc
        if len(text) != 2 or not text[0].isdigit():
            return (-1, "")
        return int(text[0]), text[1]

    def advance_head(self, row: AuditRow) -> None:
        """Name `row` in the head file unless it names a newer one already.

        Under a lock file, so two processes appending at once cannot move it back. A lagging
        head is harmless (rows after it are checked by the chain); a missing tail is what it is
        for.
        """
        try:
            fd = os.open(
                self.head_path.with_name(HEAD_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o644
            )
        except OSError:
            return  # the row is written; verify then sees a lagging head, not a broken chain
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            head = self.read_head()
            if head is None or head[0] < row.id:
                write_atomic(self.head_path, f"{row.id} {row.hash}\n".encode())
        except (OSError, StorageError):
            pass
        finally:
            os.close(fd)  # closing drops the lock

    def verify(self) -> Verification:
        """Walk the chain from the first row: the first edited, missing or re-chained row, or a
        head file that names a row the table no longer has."""
        head = self.read_head()  # before the rows: a row appended meanwhile only adds to them
        rows = self.rows()
        prev = GENESIS
        last_id = 0
        for r in rows:
            if r.id != last_id + 1:
                missing = (
                    f"row {last_id + 1}"
                    if r.id == last_id + 2
                    else f"rows {last_id + 1}-{r.id - 1}"
                )
                return Verification(
                    False,
                    len(rows),
                    f"audit {missing} deleted: the ids jump from {last_id} to {r.id}",
                    last_id + 1,
                )
            if row_hash(prev, r) != r.hash:
                return Verification(
                    False,
                    len(rows),
                    f"audit row {r.id} was edited: its hash does not match its content "
                    f"({r.action} by {r.user} at {r.when:%Y-%m-%d %H:%M:%S})",
                    r.id,
                )
            prev, last_id = r.hash, r.id
        if head is not None:
            hid, hhash = head
            if hid < 0:
                return Verification(False, len(rows), f"{self.head_path} is damaged", None)
            if hid > last_id:
                gone = f"row {hid}" if hid == last_id + 1 else f"rows {last_id + 1}-{hid}"
                return Verification(
                    False,
                    len(rows),
                    f"audit {gone} deleted: {self.head_path.name} names row {hid}, the table "
                    f"ends at {last_id}",
                    last_id + 1,
                )
            by_id = {r.id: r for r in rows}
            if hid > 0 and by_id[hid].hash != hhash:
                return Verification(
                    False,
                    len(rows),
                    f"audit row {hid} differs from the one {self.head_path.name} names "
                    "(the chain was rewritten)",
                    hid,
                )
        elif rows:
            return Verification(
                False,
                len(rows),
                f"{self.head_path} is missing: the newest rows cannot be checked",
                None,
            )
        return Verification(True, len(rows))


def _text(value: Any) -> str | None:
    """A before/after value as stored: None, a string as it is, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
