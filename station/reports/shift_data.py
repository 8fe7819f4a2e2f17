"""Everything a shift report says, read from the records in one place: the PDF and the CSV are
two ways of writing the same `ShiftData`, so their numbers cannot disagree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from station.core.result import StationState, Verdict
from station.records.audit import AuditRow
from station.records.db import (
    INSPECTION_COLUMNS,
    Database,
    EventRow,
    InspectionRow,
    ShiftCounts,
    conditions,
    inspection_row,
)
from station.records.dispositions import Disposition, DispositionRow, dispositions_in
from station.records.shifts import Shift

# Events a QA engineer wants to see in a report: alarms and the changes that explain them.
ALARM_KINDS = ("camera", "storage", "error", "drift", "model", "threshold")
ALARM_STATES = (
    StationState.CAMERA_LOST,
    StationState.FAILED,
    StationState.PAUSED,
    StationState.STOPPED,
    StationState.MODEL_MISSING,
)
DRIFT_LEVELS = ("none", "warning", "critical")


@dataclass(frozen=True)
class VersionUse:
    """A model version (with one set of limits) that judged parts in the shift."""

    model_version: str
    threshold: float
    check_threshold: float | None
    parts: int
    first: float
    last: float


@dataclass(frozen=True)
class HourStats:
    """One clock hour of the shift."""

    start: float
    inspected: int
    nok: int
    check: int
    latency_p50_ms: float
    latency_p95_ms: float

    @property
    def nok_rate(self) -> float:
        return self.nok / self.inspected if self.inspected else 0.0


@dataclass(frozen=True)
class PChart:
    """The NOK rate per hour against the shift's mean rate, with 3-sigma limits for each hour's
    sample size (a p-chart): an hour outside its limits is more than chance."""

    centre: float
    upper: tuple[float, ...]
    lower: tuple[float, ...]
    out_of_control: tuple[int, ...]  # indices of hours outside their limits


@dataclass
class ShiftData:
    station: str
    shift: Shift
    product: str | None  # the report's product filter (None: all products)
    products: list[str]
    versions: list[VersionUse]
    counts: dict[str, int]  # inspected, ok, check, nok (rows in the window) + station counters
    station_counts: ShiftCounts  # the shift's counters (all products): dropped, not recorded
    hours: list[HourStats]
    latency_p50_ms: float
    latency_p95_ms: float
    scores: dict[str, np.ndarray]  # OK / CHECK / NOK parts' scores
    drift: list[tuple[float, str]]  # (time, level) steps, the level at the shift start first
    events: list[EventRow]
    dispositions: list[DispositionRow]  # recorded during the shift
    standing: dict[Disposition, int]  # parts of the shift by the disposition that stands now
    gallery: list[InspectionRow]  # highest-scoring NOK parts with an archived image
    audit: list[AuditRow]
    generated_at: float
    generated_by: str
    has_check_band: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def false_reject_rate(self) -> float | None:
        """Confirmed false rejects among the parts inspected (None: nothing inspected)."""
        n = self.counts.get("inspected", 0)
        return self.standing.get(Disposition.FALSE_REJECT, 0) / n if n else None

    @property
    def pchart(self) -> PChart:
        n = np.array([h.inspected for h in self.hours], dtype=np.float64)
        k = np.array([h.nok for h in self.hours], dtype=np.float64)
        p = float(k.sum() / n.sum()) if n.sum() else 0.0
        sigma = np.sqrt(p * (1 - p) / np.maximum(n, 1))
        upper = np.minimum(1.0, p + 3 * sigma)
        lower = np.maximum(0.0, p - 3 * sigma)
        rate = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
        out = tuple(int(i) for i in np.flatnonzero((n > 0) & ((rate > upper) | (rate < lower))))
        return PChart(p, tuple(upper.tolist()), tuple(lower.tolist()), out)


def _where(shift: Shift, product: str | None) -> tuple[str, list[Any]]:
    where, params = conditions(shift.start, shift.end, {"product": product})
    return " WHERE " + " AND ".join(where), params


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


def collect(
    db: Database,
    shift: Shift,
    *,
    product: str | None = None,
    station: str = "",
    audit: Sequence[AuditRow] = (),
    generated_by: str = "",
    gallery: int = 12,
    now: float | None = None,
) -> ShiftData:
    """Read the shift's records (of one product, or all) into a ShiftData."""
    where, params = _where(shift, product)
    rows = db.fetch(
        f"SELECT time, score, verdict, latency_ms, product FROM inspections{where} ORDER BY time",
        params,
    )
    t = np.array([r[0] for r in rows], dtype=np.float64)
    score = np.array([r[1] for r in rows], dtype=np.float64)
    verdict = np.array([r[2] for r in rows], dtype=object)
    latency = np.array([r[3] for r in rows], dtype=np.float64)
    products = sorted({r[4] for r in rows if r[4]})
    counts = {
        "inspected": len(rows),
        "ok": int((verdict == Verdict.OK.value).sum()),
        "check": int((verdict == Verdict.CHECK.value).sum()),
        "nok": int((verdict == Verdict.NOK.value).sum()),
    }
    hours: list[HourStats] = []
    start = shift.start
    while start < shift.end:
        end = min(shift.end, start + 3600.0)
        sel = (t >= start) & (t < end)
        lat = latency[sel]
        v = verdict[sel]
        hours.append(
            HourStats(
                start=start,
                inspected=int(sel.sum()),
                nok=int((v == Verdict.NOK.value).sum()),
                check=int((v == Verdict.CHECK.value).sum()),
                latency_p50_ms=_percentile(lat, 50),
                latency_p95_ms=_percentile(lat, 95),
            )
        )
        start = end
    versions = [
        VersionUse(r[0], float(r[1]), None if r[2] is None else float(r[2]), int(r[3]), r[4], r[5])
        for r in db.fetch(
            "SELECT model_version, threshold, check_threshold, count(*), min(time), max(time) "
            f"FROM inspections{where} GROUP BY model_version, threshold, check_threshold "
            "ORDER BY min(time)",
            params,
        )
    ]
    gallery_rows = [
        inspection_row(r)
        for r in db.fetch(
            f"SELECT {INSPECTION_COLUMNS} FROM inspections{where} AND verdict = 'NOK' "
            "AND image_path IS NOT NULL ORDER BY score DESC, id LIMIT ?",
            [*params, max(0, int(gallery))],
        )
    ]
    events = sorted(db.query_events(shift.start, shift.end), key=lambda e: (e.time, e.id))
    before = db.query_events(until=shift.start, kind="drift", limit=1)
    drift = [(shift.start, str(before[0].data.get("level", "none")) if before else "none")]
    drift += [(e.time, str(e.data.get("level", "none"))) for e in events if e.kind == "drift"]
    alarm_states = {s.value for s in ALARM_STATES}
    alarms = [
        e
        for e in events
        if e.kind in ALARM_KINDS
        or (
            e.kind == "state"
            # ... and the way back from one: how long the camera was gone reads off the pair.
            and (e.state in ALARM_STATES or str(e.data.get("from", "")) in alarm_states)
        )
    ]
    dispositions = dispositions_in(db, shift.start, shift.end, product=product)
    standing: dict[Disposition, int] = {}
    for kind, n in db.fetch(
        f"SELECT disposition, count(*) FROM inspections{where} AND disposition IS NOT NULL "
        "GROUP BY disposition",
        params,
    ):
        standing[Disposition(kind)] = int(n)
    data = ShiftData(
        station=station,
        shift=shift,
        product=product,
        products=products,
        versions=versions,
        counts=counts,
        station_counts=db.shift_counts(shift.key),
        hours=hours,
        latency_p50_ms=_percentile(latency, 50),
        latency_p95_ms=_percentile(latency, 95),
        scores={
            v.value: score[verdict == v.value] for v in (Verdict.OK, Verdict.CHECK, Verdict.NOK)
        },
        drift=drift,
        events=alarms,
        dispositions=dispositions,
        standing=standing,
        gallery=gallery_rows,
        audit=list(audit),
        generated_at=time.time() if now is None else now,
        generated_by=generated_by,
        has_check_band=any(v.check_threshold is not None for v in versions),
    )
    if (now or time.time()) < shift.end:
        data.notes.append("The shift was still running when this report was made.")
    stored = data.station_counts.inspected
    if product is None and stored != counts["inspected"]:
        data.notes.append(
            f"The shift's counter says {stored} parts inspected, {counts['inspected']} are "
            "recorded: the difference was not recorded (see 'not recorded')."
        )
    return data


CSV_HEADER = (
    "part_id",
    "time",
    "product",
    "model_version",
    "score",
    "limit",
    "verdict",
    "disposition",
    "image_path",
)


def inspection_rows(
    db: Database, shift: Shift, product: str | None = None, batch: int = 5000
) -> Iterator[InspectionRow]:
    """Every inspection of the shift, oldest first, read in batches (a shift can hold 100 000)."""
    where, params = _where(shift, product)
    last = (-math.inf, 0)
    while True:
        chunk = db.fetch(
            f"SELECT {INSPECTION_COLUMNS} FROM inspections{where} AND (time, id) > (?, ?) "
            "ORDER BY time, id LIMIT ?",
            [*params, last[0], last[1], batch],
        )
        if not chunk:
            return
        for r in chunk:
            yield inspection_row(r)
        last = (chunk[-1][1], chunk[-1][0])
