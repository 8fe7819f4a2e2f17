"""QA's side of the station: a part's detail, dispositions, the confirmed false rejects the
technician can add to the model, and shift reports (written on request and at every shift end).

StationApp calls these with the role already checked; nothing here asks who is calling.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from station.config import StationConfig
from station.core.errors import ImageError, StationError, StorageError
from station.core.result import InspectionResult, StationEvent, Verdict
from station.core.worker import Worker
from station.records.archive import archived_picture, load_archived
from station.records.audit import AuditRow
from station.records.db import Database, EventRow, InspectionRow
from station.records.dispositions import (
    LABELS,
    ON_REJECTS,
    Disposition,
    DispositionRow,
    dispositions_of,
)
from station.records.history import (
    NO_DISPOSITION,
    HistoryFilter,
    HistoryPage,
    HistoryQuery,
    PageKey,
    Sort,
)
from station.records.shifts import Shift, current_shift, previous_shift
from station.reports.csv_report import write_csv
from station.reports.pdf_report import write_pdf
from station.reports.shift_data import collect

log = logging.getLogger(__name__)

EVENTS_AROUND_S = 120.0  # a part's detail shows the events this long before and after it
MAX_REASON = 500
REJECTED = (Verdict.NOK, Verdict.CHECK)
PASSED = (Verdict.OK, Verdict.CHECK)  # a CHECK part can have passed its manual check


@dataclass(frozen=True)
class InspectionDetail:
    """One recorded part as the history's detail shows it."""

    row: InspectionRow
    image: np.ndarray | None  # None: not kept (an OK part not sampled, or retention ran)
    anomaly_map: np.ndarray | None
    dispositions: list[DispositionRow]
    events: list[EventRow]  # around the part's time, oldest first
    image_problem: str = ""  # why the image could not be shown, when it could not

    def result(self) -> InspectionResult | None:
        """The part as the screens' image views take it (None without an image)."""
        if self.image is None:
            return None
        r = self.row
        return InspectionResult(
            frame_id=r.frame_id, timestamp=r.time, source=r.source, score=r.score,
            threshold=r.threshold, verdict=r.verdict, latency_ms=r.latency_ms,
            model_version=r.model_version, image=self.image, anomaly_map=self.anomaly_map,
            label=r.label, part_id=r.part_id or "", check_threshold=r.check_threshold,
            product=r.product or "",
        )  # fmt: skip


def fitting(verdict: Verdict) -> tuple[Disposition, ...]:
    """The dispositions that fit a part with this verdict."""
    return tuple(
        d
        for d in Disposition
        if (verdict in PASSED if d == Disposition.MISSED else verdict in REJECTED)
    )


def standing_text(dispositions: Sequence[DispositionRow]) -> str:
    """'False reject - anna (qa), 2026-12-01 10:42: part is good' for the latest, or ''."""
    if not dispositions:
        return ""
    d = dispositions[-1]
    more = f" ({len(dispositions) - 1} earlier)" if len(dispositions) > 1 else ""
    return f"{LABELS[d.kind]} - {d.user} ({d.role}), {d.when:%Y-%m-%d %H:%M}: {d.reason}{more}"


def thumbnail(data_dir: Path, row: InspectionRow, size: int) -> np.ndarray | None:
    """A small RGB picture of a recorded part with its overlay (None: no image kept)."""
    return archived_picture(data_dir, row, size, mark_peak=row.verdict == Verdict.NOK)


def export_destinations(folder: Path) -> list[tuple[str, Path]]:
    """Where a report can go: the reports folder and every mounted removable drive (USB
    sticks under /media/<user>/, /run/media/<user>/ and /mnt/)."""
    out = [("Reports folder", folder)]
    for root in (Path("/media"), Path("/run/media"), Path("/mnt")):
        try:
            candidates = [p for p in root.iterdir() if p.is_dir()]
        except OSError:
            continue
        for p in sorted(candidates):
            inner = [p] if os.path.ismount(p) else []
            if not inner:
                try:
                    inner = [q for q in sorted(p.iterdir()) if q.is_dir() and os.path.ismount(q)]
                except OSError:
                    inner = []
            for q in inner:
                if os.access(q, os.W_OK):
                    out.append((f"USB drive {q.name}", q))
    return out


def load_detail(db: Database, data_dir: Path, row: InspectionRow) -> InspectionDetail:
    image = amap = None
    problem = ""
    try:
        image, amap = load_archived(data_dir, row.image_path, row.map_path, row.threshold)
        if image is None:
            problem = "no image kept for this part" + (
                " (only one OK part in N is archived)" if row.verdict == Verdict.OK else ""
            )
    except (ImageError, OSError) as exc:
        problem = f"archived image unreadable: {exc}"
    events = sorted(
        db.query_events(row.time - EVENTS_AROUND_S, row.time + EVENTS_AROUND_S, limit=50),
        key=lambda e: (e.time, e.id),
    )
    return InspectionDetail(row, image, amap, dispositions_of(db, row.id), events, problem)


def check_disposition(row: InspectionRow, kind: Disposition, reason: str) -> str:
    """The reason, cleaned; StationError when this disposition does not fit the part."""
    text = " ".join(reason.split())
    if not text:
        raise StationError("a disposition needs a reason: say what was found")
    if len(text) > MAX_REASON:
        raise StationError(f"the reason is {len(text)} characters long; {MAX_REASON} at most")
    name = row.part_id or f"#{row.id}"
    if kind == Disposition.MISSED and row.verdict not in PASSED:
        raise StationError(
            f"{name} was rejected ({row.verdict.value}); 'missed defect' is for parts that passed"
        )
    if kind != Disposition.MISSED and row.verdict not in REJECTED:
        raise StationError(
            f"{name} passed (OK); '{kind.label.lower()}' is for rejected parts - "
            "a passed part found bad later is a 'missed defect'"
        )
    return text


@dataclass(frozen=True)
class FalseReject:
    """A part rejected by the current model and confirmed good: a candidate for the bank."""

    part_id: str
    image: Path
    score: float
    reason: str


def false_rejects(db: Database, data_dir: Path, product: str, version: str) -> list[FalseReject]:
    """Parts of `product` judged by its `version` ('v0003') whose standing disposition is
    'false reject' and whose image is still in the archive, highest score first."""
    rows = db.fetch(
        "SELECT i.part_id, i.image_path, i.score, "
        "(SELECT reason FROM dispositions d WHERE d.inspection_id = i.id ORDER BY d.id DESC "
        "LIMIT 1) FROM inspections i WHERE i.disposition = 'false_reject' AND i.product = ? "
        "AND i.model_version = ? AND i.image_path IS NOT NULL ORDER BY i.score DESC",
        [product, f"{product}/{version}"],
    )
    out = []
    for part, image, score, reason in rows:
        path = data_dir / image
        if path.is_file():
            out.append(FalseReject(part or "", path, float(score), reason or ""))
    return out


# -- reports ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportFiles:
    shift: Shift
    product: str | None
    pdf: Path | None
    csv: Path | None
    rows: int  # inspections in the report
    counts: dict[str, int] = field(default_factory=dict)


def station_name(cfg: StationConfig) -> str:
    return cfg.reports.station_name or socket.gethostname()


def reports_folder(cfg: StationConfig, data_dir: Path) -> Path:
    folder = Path(cfg.reports.folder or "reports").expanduser()
    return folder if folder.is_absolute() else data_dir / folder


def default_names(folder: Path, shift: Shift, product: str | None) -> tuple[Path, Path]:
    """Where a shift's report goes by default: reports/shift_2026-12-01_06[_demo].pdf / .csv."""
    stem = f"shift_{shift.file_stem}" + (f"_{product}" if product else "")
    return folder / f"{stem}.pdf", folder / f"{stem}.csv"


def write_report(
    db: Database,
    data_dir: Path,
    cfg: StationConfig,
    shift: Shift,
    *,
    product: str | None,
    pdf: Path | None,
    csv: Path | None,
    audit: Sequence[AuditRow],
    by: str,
) -> ReportFiles:
    """Collect the shift and write the PDF and/or CSV (each atomically)."""
    for path in (pdf, csv):
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"{path.parent}: cannot write the report here: {exc}") from exc
    data = collect(
        db, shift, product=product, station=station_name(cfg), audit=audit, generated_by=by,
        gallery=cfg.reports.gallery,
    )  # fmt: skip
    try:
        if pdf is not None:
            write_pdf(data, data_dir, pdf)
        n = (
            write_csv(db, shift, csv, product=product)
            if csv is not None
            else data.counts["inspected"]
        )
    except OSError as exc:
        raise StorageError(f"report not written: {exc}") from exc
    return ReportFiles(shift, product, pdf, csv, n, dict(data.counts))


class ShiftReporter(Worker):
    """Writes the report of each shift into the reports folder once the shift has ended (and,
    after a start, of the last shift before it if that one has none yet)."""

    name = "shift-reports"
    POLL_S = 30.0

    def __init__(
        self,
        write: Callable[[Shift, Path, Path], ReportFiles],
        has_parts: Callable[[Shift], bool],
        folder: Path,
        shift_hours: Sequence[int],
        on_written: Callable[[StationEvent], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._write = write
        self._has_parts = has_parts
        self.folder = folder
        self.hours = list(shift_hours)
        self._on_written = on_written
        self._clock = clock
        self._done: set[str] = set()
        self._failed: set[str] = set()

    def due(self) -> Shift | None:
        """The last ended shift, when it had parts and has no report yet."""
        last = previous_shift(current_shift(self._clock(), self.hours), self.hours)
        if last.key in self._done:
            return None
        pdf, _ = default_names(self.folder, last, None)
        if pdf.exists() or not self._has_parts(last):
            self._done.add(last.key)
            return None
        return last

    def step(self) -> bool:
        shift = self.due()
        if shift is not None:
            pdf, csv = default_names(self.folder, shift, None)
            try:
                files = self._write(shift, pdf, csv)
                self._done.add(shift.key)
                self._on_written(
                    StationEvent(
                        kind="report",
                        message=f"shift report {shift.key} written: {pdf.name}, {files.rows} parts",
                        data={"shift": shift.key, "pdf": str(pdf), "csv": str(csv)},
                    )
                )
            except (StationError, OSError) as exc:
                # Tried again at the next poll (a full disk or an unplugged share may come
                # back); the event is written once.
                log.error("shift report %s not written: %s", shift.key, exc)
                if shift.key not in self._failed:
                    self._failed.add(shift.key)
                    self._on_written(
                        StationEvent(
                            kind="storage",
                            message=f"shift report {shift.key} not written: {exc}",
                            data={"shift": shift.key},
                        )
                    )
        self.wait(self.POLL_S)
        return not self.stopping


__all__ = [
    "LABELS",
    "NO_DISPOSITION",
    "ON_REJECTS",
    "Disposition",
    "DispositionRow",
    "FalseReject",
    "HistoryFilter",
    "HistoryPage",
    "HistoryQuery",
    "InspectionDetail",
    "PageKey",
    "ReportFiles",
    "Shift",
    "ShiftReporter",
    "Sort",
]
