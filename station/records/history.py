"""The history browser's queries: filtered, sorted, paged by key (never OFFSET), counted to a cap.

A page asks for `page_size + 1` rows after the last key of the page before, so the cost of a
page does not grow with how far a person has paged; the total is counted only up to `COUNT_CAP`
("10 000+"), so a filter that matches most of a year's records still answers at once. The
indexes behind each filter are made by migration 4; `station bench-history` measures them on a
generated database of a million rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from station.core.compat import StrEnum
from station.core.result import Verdict
from station.records.db import (
    INSPECTION_COLUMNS,
    Database,
    InspectionRow,
    conditions,
    inspection_row,
)

COUNT_CAP = 10_000
FEW = 2_000  # at most this many matches: sorted after filtering (see page_rows)
NO_DISPOSITION = "none"  # the disposition filter's value for parts without one


class Sort(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    SCORE_HIGH = "score_high"
    SCORE_LOW = "score_low"


# column, direction of each sort; id breaks ties so a key names exactly one row.
_ORDER = {
    Sort.NEWEST: ("time", "DESC"),
    Sort.OLDEST: ("time", "ASC"),
    Sort.SCORE_HIGH: ("score", "DESC"),
    Sort.SCORE_LOW: ("score", "ASC"),
}


@dataclass(frozen=True)
class HistoryFilter:
    """What the history shows; every field left empty lets all rows through."""

    since: float | None = None
    until: float | None = None
    product: str | None = None
    model_version: str | None = None  # as recorded: 'demo/v0002'
    verdicts: tuple[Verdict, ...] = ()  # the station's verdicts (any of them)
    disposition: str | None = None  # a Disposition value, or NO_DISPOSITION
    score_min: float | None = None
    score_max: float | None = None
    part_id: str | None = None  # the start of a part id, any case: 'demo-20261201-0001'

    def where(self) -> tuple[list[str], list[Any]]:
        """The WHERE terms and parameters of this filter."""
        where, params = conditions(
            self.since,
            self.until,
            {"product": self.product or None, "model_version": self.model_version or None},
        )
        if self.verdicts:
            where.append(f"verdict IN ({', '.join('?' * len(self.verdicts))})")
            params.extend(Verdict(v).value for v in self.verdicts)
        if self.disposition == NO_DISPOSITION:
            where.append("disposition IS NULL")
        elif self.disposition:
            where.append("disposition = ?")
            params.append(self.disposition)
        if self.score_min is not None:
            where.append("score >= ?")
            params.append(float(self.score_min))
        if self.score_max is not None:
            where.append("score <= ?")
            params.append(float(self.score_max))
        text = (self.part_id or "").strip().upper()
        if text:
            # A range on the unique part-id index; part ids are upper case by construction.
            where.append("part_id >= ? AND part_id < ?")
            params.extend([text, text + "\uffff"])
        return where, params


@dataclass(frozen=True)
class PageKey:
    """Where a page ends: the sort column's value and the row id of its last row."""

    value: float
    id: int


@dataclass(frozen=True)
class HistoryPage:
    rows: list[InspectionRow]
    next_key: PageKey | None  # None: this is the last page
    total: int  # rows matching the filter, counted up to COUNT_CAP
    capped: bool = False  # True: there are more than `total`

    @property
    def total_text(self) -> str:
        """'1 234', or '10 000+' when capped (a space between thousands, as on the screen)."""
        return f"{self.total:,}".replace(",", " ") + ("+" if self.capped else "")


@dataclass(frozen=True)
class HistoryQuery:
    """A filter, a sort and a page size: what the history page asks for."""

    filter: HistoryFilter = field(default_factory=HistoryFilter)
    sort: Sort = Sort.NEWEST
    page_size: int = 50


def choose_index(db: Database, q: HistoryQuery) -> str:
    """The index to search by where the station knows better than SQLite's planner ('' to
    leave it to the planner).

    Without statistics on skew the planner takes every equality as equally selective and picks,
    say, the product index (half of all rows) for "NOK parts of that product". What the
    station knows: a disposition, then a NOK / CHECK verdict, is nearly always the narrowest
    filter (a line rejects a few percent); a score range is probed on its own index (counting
    at most FEW + 1 index entries costs well under a millisecond) and used when it is narrow;
    a sort by score over many matches walks the score index and stops after a page.
    """
    f = q.filter
    if f.disposition and f.disposition != NO_DISPOSITION:
        return " INDEXED BY inspections_disposition_time"
    if f.score_min is not None or f.score_max is not None:
        probe = HistoryFilter(score_min=f.score_min, score_max=f.score_max)
        where, params = probe.where()
        n = db.fetch(
            "SELECT count(*) FROM (SELECT 1 FROM inspections INDEXED BY inspections_score "
            f"WHERE {' AND '.join(where)} LIMIT ?)",
            [*params, FEW + 1],
        )[0][0]
        if int(n) <= FEW:
            return " INDEXED BY inspections_score"
    if f.verdicts and all(Verdict(v) != Verdict.OK for v in f.verdicts):
        return " INDEXED BY inspections_verdict_time"
    return ""


def query_page(db: Database, q: HistoryQuery, after: PageKey | None = None) -> HistoryPage:
    """One page of `q`, starting after `after` (None: the first page), and the capped total."""
    index = choose_index(db, q)
    total, capped = count(db, q.filter, index=index)
    few = not capped and total <= FEW
    if not index and not few and q.sort in (Sort.SCORE_HIGH, Sort.SCORE_LOW):
        index = " INDEXED BY inspections_score"
    rows = page_rows(db, q, after, few=few, index=index)
    more = len(rows) > q.page_size
    rows = rows[: q.page_size]
    column, _ = _ORDER[q.sort]
    next_key = PageKey(getattr(rows[-1], column), rows[-1].id) if more and rows else None
    return HistoryPage(rows=rows, next_key=next_key, total=total, capped=capped)


def page_rows(
    db: Database,
    q: HistoryQuery,
    after: PageKey | None = None,
    *,
    few: bool = False,
    index: str = "",
) -> list[InspectionRow]:
    """Up to page_size + 1 rows of `q` after `after` (the extra row says another page follows).

    `few`: the filter matches few rows (the count says so). SQLite would walk the sort column's
    index and test every row until a page is full, which for 10 matches in a million is a full
    scan; '+column' keeps it off that index, so it finds the matches through the filter's index
    and sorts them.
    """
    where, params = q.filter.where()
    column, direction = _ORDER[q.sort]
    if after is not None:
        op = "<" if direction == "DESC" else ">"
        where.append(f"({column}, id) {op} (?, ?)")
        params.extend([after.value, after.id])
    sql = f"SELECT {INSPECTION_COLUMNS} FROM inspections{index}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sort = f"+{column}" if few else column
    sql += f" ORDER BY {sort} {direction}, id {direction} LIMIT ?"
    params.append(max(1, int(q.page_size)) + 1)
    return [inspection_row(r) for r in db.fetch(sql, params)]


def count(
    db: Database, flt: HistoryFilter, cap: int = COUNT_CAP, *, index: str = ""
) -> tuple[int, bool]:
    """How many rows match, counted up to `cap`; (n, True) when there are more."""
    where, params = flt.where()
    sql = f"SELECT count(*) FROM (SELECT 1 FROM inspections{index}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " LIMIT ?)"
    n = int(db.fetch(sql, [*params, cap + 1])[0][0])
    return (cap, True) if n > cap else (n, False)


def versions_seen(db: Database, product: str | None = None) -> list[str]:
    """Model versions that judged parts (of `product`), newest name first; one index probe per
    version (a skip-scan of the model-version index), so it stays quick on a big database."""
    out: list[str] = []
    last: str | None = None
    while True:
        if last is None:
            row = db.fetch("SELECT max(model_version) FROM inspections")[0]
        else:
            row = db.fetch(
                "SELECT max(model_version) FROM inspections WHERE model_version < ?", [last]
            )[0]
        if row[0] is None:
            break
        last = str(row[0])
        if product is None or last.split("/", 1)[0] == product:
            out.append(last)
    return out
