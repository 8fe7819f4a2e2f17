"""What happened to a part after its verdict: confirmed defect, false reject, sent to rework, or a
missed defect found later. Append-only (triggers refuse UPDATE and DELETE); the latest one of a
part stands and is copied onto its inspection row, so the history filters on it with an index.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from station.core.compat import StrEnum
from station.core.errors import StationError
from station.records.db import Database, TimeArg, conditions, to_epoch


class Disposition(StrEnum):
    CONFIRMED = "confirmed_defect"  # the rejected part is bad
    FALSE_REJECT = "false_reject"  # the rejected part is good: the station was wrong
    REWORK = "rework"  # the rejected part went to rework
    MISSED = "missed_defect"  # a part that passed was found bad later: the station missed it

    @property
    def label(self) -> str:
        return LABELS[self]


LABELS = {
    Disposition.CONFIRMED: "Confirmed defect",
    Disposition.FALSE_REJECT: "False reject",
    Disposition.REWORK: "Sent to rework",
    Disposition.MISSED: "Missed defect",
}

# What an operator may say from the NOK detail; QA may record any (a missed defect included).
ON_REJECTS = (Disposition.CONFIRMED, Disposition.FALSE_REJECT, Disposition.REWORK)


def parse_disposition(text: str) -> Disposition:
    """A disposition from its name ('false_reject', 'false-reject', 'False reject')."""
    key = text.strip().lower().replace("-", "_").replace(" ", "_")
    for d in Disposition:
        if key in (d.value, d.label.lower().replace(" ", "_"), d.name.lower()):
            return d
    raise StationError(
        f"'{text}' is not a disposition: choose one of {', '.join(d.value for d in Disposition)}"
    )


@dataclass(frozen=True)
class DispositionRow:
    """One recorded disposition."""

    id: int
    inspection_id: int
    time: float
    kind: Disposition
    reason: str
    user: str
    role: str
    via: str
    part_id: str | None = None

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.time).astimezone()


_COLUMNS = "d.id, d.inspection_id, d.time, d.kind, d.reason, d.user, d.role, d.via, i.part_id"
_FROM = "FROM dispositions d JOIN inspections i ON i.id = d.inspection_id"


def _row(r: tuple[Any, ...]) -> DispositionRow:
    return DispositionRow(r[0], r[1], r[2], Disposition(r[3]), r[4], r[5], r[6], r[7], r[8])


def add_disposition(
    cur: sqlite3.Cursor,
    inspection_id: int,
    kind: Disposition,
    *,
    reason: str,
    user: str,
    role: str,
    via: str = "",
    when: TimeArg = None,
) -> DispositionRow:
    """Append one disposition inside the caller's transaction and make it the part's latest."""
    t = to_epoch(when) or datetime.now().timestamp()
    cur.execute(
        "INSERT INTO dispositions (inspection_id, time, kind, reason, user, role, via) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (inspection_id, t, Disposition(kind).value, reason, user, role, via),
    )
    row_id = int(cur.lastrowid or 0)
    cur.execute(
        "UPDATE inspections SET disposition = ? WHERE id = ?",
        (Disposition(kind).value, inspection_id),
    )
    if cur.rowcount != 1:
        raise StationError(f"no inspection with id {inspection_id}")
    part = cur.execute("SELECT part_id FROM inspections WHERE id = ?", (inspection_id,)).fetchone()
    return DispositionRow(
        row_id, inspection_id, t, Disposition(kind), reason, user, role, via, part[0]
    )


def dispositions_of(db: Database, inspection_id: int) -> list[DispositionRow]:
    """Every disposition of one part, oldest first (the last one stands)."""
    rows = db.fetch(
        f"SELECT {_COLUMNS} {_FROM} WHERE d.inspection_id = ? ORDER BY d.id", [inspection_id]
    )
    return [_row(r) for r in rows]


def dispositions_in(
    db: Database, since: TimeArg = None, until: TimeArg = None, *, product: str | None = None
) -> list[DispositionRow]:
    """Dispositions recorded with since <= time < until (optionally of one product's parts),
    oldest first."""
    where, params = conditions(since, until, {"i.product": product}, time_column="d.time")
    rows = db.fetch(
        f"SELECT {_COLUMNS} {_FROM} WHERE {' AND '.join(['1', *where])} ORDER BY d.id", params
    )
    return [_row(r) for r in rows]


def latest_of_parts_in(
    db: Database,
    since: TimeArg = None,
    until: TimeArg = None,
    *,
    product: str | None = None,
) -> dict[Disposition, int]:
    """How many parts inspected in the window stand at each disposition now."""
    where, params = conditions(since, until, {"product": product})
    rows = db.fetch(
        "SELECT disposition, count(*) FROM inspections WHERE "
        f"{' AND '.join(['disposition IS NOT NULL', *where])} "
        "GROUP BY disposition",
        params,
    )
    return {Disposition(k): int(n) for k, n in rows}
