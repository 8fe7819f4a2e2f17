"""The shift report as a PDF (reportlab): what QA files and what a plant manager reads.

Page one answers "how did the shift go" (counts, rates, versions and limits, dispositions);
the charts follow (NOK rate as a p-chart, throughput, latency, scores, drift), then the alarms,
the dispositions one by one, the worst parts with their overlays, and the audit trail of the
shift. Every page carries the station, the shift and "page n of N".
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas as pdfcanvas
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from station.core.files import write_atomic
from station.records.archive import archived_picture
from station.records.dispositions import LABELS, Disposition
from station.reports import charts
from station.reports.shift_data import ShiftData

PAGE = A4
MARGIN = 16 * mm
WIDTH = PAGE[0] - 2 * MARGIN

_styles = getSampleStyleSheet()
H1 = ParagraphStyle("h1", parent=_styles["Heading1"], fontSize=17, spaceAfter=2, leading=21)
H2 = ParagraphStyle("h2", parent=_styles["Heading2"], fontSize=12, spaceBefore=10, spaceAfter=4)
BODY = ParagraphStyle("body", parent=_styles["BodyText"], fontSize=8.5, leading=11)
SMALL = ParagraphStyle("small", parent=BODY, fontSize=7.5, leading=9.5)
NOTE = ParagraphStyle("note", parent=BODY, textColor=colors.HexColor("#8a4b00"))
CAPTION = ParagraphStyle("caption", parent=SMALL, alignment=TA_CENTER)
HEAD_BG = colors.HexColor("#e8eaf0")
RULE = colors.HexColor("#b0b4c0")


def _t(ts: float, day: bool = False) -> str:
    return (
        f"{datetime.fromtimestamp(ts):%Y-%m-%d %H:%M:%S}"
        if day
        else (f"{datetime.fromtimestamp(ts):%H:%M:%S}")
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f} %"


def _esc(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _table(
    rows: Sequence[Sequence[Any]],
    widths: Sequence[float] | None = None,
    *,
    header: bool = True,
    align_right: Sequence[int] = (),
    zebra: bool = True,
) -> Table:
    cells = [[c if isinstance(c, Flowable) else Paragraph(_esc(c), SMALL) for c in r] for r in rows]
    t = Table(cells, colWidths=widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, RULE),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), HEAD_BG))
    if zebra:
        for i in range(2, len(rows), 2):
            style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#f6f7f9")))
    for col in align_right:
        style.append(("ALIGN", (col, 0), (col, -1), "RIGHT"))
    t.setStyle(TableStyle(style))
    return t


def _numbered(data: ShiftData) -> type[pdfcanvas.Canvas]:
    """A canvas that writes the running header and 'page n of N' (known after the last page)."""
    title = f"{data.station} - shift {data.shift.key}"
    product = data.product or ", ".join(data.products) or "no parts"
    made = f"generated {_t(data.generated_at, day=True)} by {data.generated_by or 'the station'}"

    class Numbered(pdfcanvas.Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._furniture(total)
                super().showPage()
            super().save()

        def _furniture(self, total: int) -> None:
            w, h = PAGE
            self.setFont("Helvetica", 7.5)
            self.setFillColor(colors.HexColor("#555555"))
            self.drawString(MARGIN, h - 10 * mm, f"{title}  |  {product}")
            self.drawRightString(w - MARGIN, h - 10 * mm, data.shift.label)
            self.drawString(MARGIN, 9 * mm, made)
            self.drawRightString(w - MARGIN, 9 * mm, f"page {self._pageNumber} of {total}")
            self.setStrokeColor(RULE)
            self.setLineWidth(0.5)
            self.line(MARGIN, h - 11.5 * mm, w - MARGIN, h - 11.5 * mm)
            self.line(MARGIN, 12 * mm, w - MARGIN, 12 * mm)

    return Numbered


def _summary(data: ShiftData) -> list[Flowable]:
    c, sc = data.counts, data.station_counts
    n = c["inspected"]
    whole = " (whole station)" if data.product else ""
    running_h = sum(1 for h in data.hours if h.inspected)
    rows: list[list[Any]] = [
        ["Inspected", f"{n}", "NOK rate", _pct(c["nok"] / n if n else None)],
        [
            "OK",
            f"{c['ok']}",
            "Throughput (mean of hours running)",
            f"{n / running_h:.0f} / h" if running_h else "-",
        ],
    ]
    if data.has_check_band or c["check"]:
        rows.append(["CHECK (manual check)", f"{c['check']}", "", ""])
    rows += [
        [
            "NOK",
            f"{c['nok']}",
            "Latency p50 / p95",
            f"{data.latency_p50_ms:.0f} / {data.latency_p95_ms:.0f} ms" if n else "-",
        ],
        [
            f"Not recorded{whole}",
            f"{sc.unrecorded}",
            "False-reject rate (confirmed)",
            _pct(data.false_reject_rate),
        ],
        [
            f"Dropped frames{whole}",
            f"{sc.dropped}",
            "Missed defects reported",
            f"{data.standing.get(Disposition.MISSED, 0)}",
        ],
    ]
    t = _table(rows, [48 * mm, 30 * mm, 62 * mm, 38 * mm], header=False, align_right=(1, 3))
    t.setStyle(TableStyle([("FONTSIZE", (0, 0), (-1, -1), 10)]))
    return [Paragraph("Counts", H2), t]


def _versions(data: ShiftData) -> list[Flowable]:
    if not data.versions:
        return [Paragraph("Model versions", H2), Paragraph("No parts were inspected.", BODY)]
    rows: list[list[Any]] = [["Model version", "Reject limit", "Check from", "Parts", "Used"]]
    for v in data.versions:
        rows.append([
            v.model_version, f"{v.threshold:.4g}",
            "-" if v.check_threshold is None else f"{v.check_threshold:.4g}",
            f"{v.parts}", f"{_t(v.first)} - {_t(v.last)}",
        ])  # fmt: skip
    return [
        Paragraph("Model versions and limits", H2),
        _table(rows, [50 * mm, 26 * mm, 24 * mm, 20 * mm, 50 * mm], align_right=(1, 2, 3)),
    ]


def _disposition_summary(data: ShiftData) -> list[Flowable]:
    rows: list[list[Any]] = [["Disposition (standing now)", "Parts", "Meaning"]]
    meaning = {
        Disposition.CONFIRMED: "rejected, and bad: the station was right",
        Disposition.FALSE_REJECT: "rejected, but good: a false reject",
        Disposition.REWORK: "rejected and sent to rework",
        Disposition.MISSED: "passed, but found bad later: a missed defect",
    }
    for d in Disposition:
        rows.append([LABELS[d], f"{data.standing.get(d, 0)}", meaning[d]])
    nok = data.counts["nok"] + data.counts["check"]
    judged = sum(data.standing.get(d, 0) for d in (Disposition.CONFIRMED, Disposition.FALSE_REJECT,
                                                   Disposition.REWORK))  # fmt: skip
    out: list[Flowable] = [
        Paragraph("Dispositions", H2),
        _table(rows, [50 * mm, 18 * mm, 100 * mm], align_right=(1,)),
        Spacer(1, 3),
        Paragraph(
            f"{judged} of {nok} rejected parts have a disposition. The false-reject rate above "
            "counts confirmed false rejects only; rejected parts nobody looked at may hold more.",
            SMALL,
        ),
    ]
    return out


def _charts(data: ShiftData) -> list[Flowable]:
    hours = data.hours
    starts = [h.start for h in hours]
    present = [h.inspected > 0 for h in hours]
    pc = data.pchart
    half = WIDTH / 2 - 4
    limits = [v.threshold for v in data.versions]
    checks = [v.check_threshold for v in data.versions if v.check_threshold is not None]
    grid = Table(
        [
            [
                charts.p_chart(
                    half,
                    150,
                    starts,
                    [h.nok_rate for h in hours],
                    present,
                    pc.centre,
                    pc.upper,
                    pc.lower,
                    pc.out_of_control,
                ),
                charts.bars_per_hour(
                    half,
                    150,
                    "Throughput per hour",
                    starts,
                    [h.inspected for h in hours],
                    y_label="parts",
                ),
            ],
            [
                charts.lines_per_hour(
                    half,
                    150,
                    "Latency per hour",
                    starts,
                    [
                        ("p50", [h.latency_p50_ms for h in hours], charts.LINE_COLOUR, False),
                        ("p95", [h.latency_p95_ms for h in hours], charts.NOK_COLOUR, True),
                    ],
                    y_label="ms",
                    present=present,
                ),
                charts.score_histogram(half, 150, data.scores, limits, checks),
            ],
        ],
        colWidths=[WIDTH / 2, WIDTH / 2],
    )
    grid.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0),
                              ("BOTTOMPADDING", (0, 0), (-1, -1), 8)]))  # fmt: skip
    out: list[Flowable] = [Paragraph("The shift hour by hour", H2), grid]
    if pc.out_of_control:
        bad = ", ".join(charts.hour_labels([starts[i] for i in pc.out_of_control]))
        out.append(Paragraph(f"NOK rate outside its control limits in: {bad}.", NOTE))
    idle: list[tuple[float, float]] = []
    for h in hours:  # runs of hours without parts, merged
        if h.inspected:
            continue
        end = min(h.start + 3600, data.shift.end)
        if idle and idle[-1][1] == h.start:
            idle[-1] = (idle[-1][0], end)
        else:
            idle.append((h.start, end))
    out.append(charts.drift_band(WIDTH, 56, data.shift.start, data.shift.end, data.drift, idle))
    return [KeepTogether(out)]


def _events(data: ShiftData) -> list[Flowable]:
    out: list[Flowable] = [Paragraph("Alarms and events", H2)]
    if not data.events:
        return [*out, Paragraph("None: no camera, storage, model or drift alarm.", BODY)]
    rows: list[list[Any]] = [["Time", "Kind", "What happened"]]
    for e in data.events:
        kind, message = e.kind, e.message
        if e.kind == "state" and e.state:
            kind = e.state.value.replace("_", " ")
            message = message.removeprefix(f"{e.state.value}: ")  # the kind column says it
        rows.append([_t(e.time), kind, message])
    return [*out, _table(rows, [20 * mm, 26 * mm, WIDTH - 46 * mm])]


def _disposition_list(data: ShiftData) -> list[Flowable]:
    if not data.dispositions:
        return []
    rows: list[list[Any]] = [["Time", "Part", "Disposition", "By", "Reason"]]
    for d in data.dispositions:
        rows.append([_t(d.time), d.part_id or f"#{d.inspection_id}", LABELS[d.kind],
                     f"{d.user} ({d.role})", d.reason])  # fmt: skip
    return [
        Paragraph("Dispositions recorded during the shift", H2),
        _table(rows, [18 * mm, 42 * mm, 28 * mm, 32 * mm, WIDTH - 120 * mm]),
    ]


def _thumb(data_dir: Path, row: Any, size: int) -> Flowable | None:
    rgb = archived_picture(data_dir, row, size * 3, mark_peak=True)
    if rgb is None:
        return None
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        return None
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    return Image(io.BytesIO(png.tobytes()), width=w * scale, height=h * scale)


def _gallery(data: ShiftData, data_dir: Path) -> list[Flowable]:
    if not data.gallery:
        return []
    cols, size = 4, (WIDTH / 4) - 8
    cells: list[list[Any]] = []
    row: list[Any] = []
    for r in data.gallery:
        img = _thumb(data_dir, r, int(size))
        caption = Paragraph(
            f"<b>{_esc(r.part_id or r.id)}</b><br/>score {r.score:.3g} (limit {r.threshold:.3g})"
            f"<br/>{_t(r.time)}" + (f" - {LABELS[Disposition(r.disposition)]}" if r.disposition
                                   else ""),
            CAPTION,
        )  # fmt: skip
        row.append([img or Paragraph("image not available", CAPTION), caption])
        if len(row) == cols:
            cells.append(row)
            row = []
    if row:
        cells.append(row + [""] * (cols - len(row)))
    t = Table(cells, colWidths=[WIDTH / cols] * cols, hAlign="LEFT")
    t.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (0, 0), (-1, -1), "CENTER")])
    )
    return [
        Paragraph(f"Highest-scoring NOK parts ({len(data.gallery)})", H2),
        Paragraph(
            "Heat map over the part where it scored above the limit; white outline: "
            "the region that decided the verdict.",
            SMALL,
        ),
        Spacer(1, 4),
        t,
    ]


def _audit(data: ShiftData) -> list[Flowable]:
    out: list[Flowable] = [Paragraph("Changes during the shift (audit trail)", H2)]
    changes = [a for a in data.audit if a.action not in ("login", "logout")]
    if not changes:
        return [*out, Paragraph("No changes: no limit, model, product or user was changed.", BODY)]
    rows: list[list[Any]] = [["Time", "Who", "Action", "Object", "Change", "Reason"]]
    for a in changes:
        change = f"{a.before or ''} -> {a.after or ''}" if (a.before or a.after) else ""
        rows.append([_t(a.time), f"{a.user} ({a.role})", a.action, a.object, change, a.reason])
    widths = [16 * mm, 30 * mm, 24 * mm, 42 * mm, 40 * mm, WIDTH - 152 * mm]
    logins = len(data.audit) - len(changes)
    unlisted = "1 log-in or log-out is" if logins == 1 else f"{logins} log-ins and log-outs are"
    return [*out, _table(rows, widths),
            Paragraph(f"{unlisted} not listed.", SMALL)]  # fmt: skip


def build_pdf(data: ShiftData, data_dir: str | Path) -> bytes:
    """The report's PDF bytes."""
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=15 * mm,
        bottomMargin=16 * mm, title=f"Shift report {data.shift.key} - {data.station}",
        author=data.generated_by or "station", subject="inspection shift report",
    )  # fmt: skip
    product = data.product or (", ".join(data.products) if data.products else "-")
    story: list[Flowable] = [
        Paragraph(f"Shift report - {_esc(data.station)}", H1),
        Paragraph(
            f"Shift <b>{data.shift.key}</b> ({data.shift.label}) &nbsp; Product: "
            f"<b>{_esc(product)}</b>",
            BODY,
        ),
    ]
    for note in data.notes:
        story.append(Paragraph(_esc(note), NOTE))
    story += _summary(data) + _versions(data) + _disposition_summary(data)
    story += _charts(data) + _events(data) + _disposition_list(data)
    story += _gallery(data, Path(data_dir)) + _audit(data)
    doc.build(story, canvasmaker=_numbered(data))
    return buf.getvalue()


def write_pdf(data: ShiftData, data_dir: str | Path, out: str | Path) -> Path:
    """Write the report to `out` atomically (a reader never sees half a PDF)."""
    path = Path(out)
    write_atomic(path, build_pdf(data, data_dir))
    return path
