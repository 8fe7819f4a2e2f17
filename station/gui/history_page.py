"""History and shift reports (QA, technician): filters, a paged list with thumbnails, a part's
detail with dispositions, and the shift report's preview and export.

Every query goes to the app with the page's session (the app checks the role again); a page
asks for 50 rows after the last one shown, so paging stays as quick on a year of records as on a
shift (`station bench-history`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QDoubleValidator, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from station.app.access import Session
from station.app.quality import (
    LABELS,
    NO_DISPOSITION,
    Disposition,
    HistoryFilter,
    HistoryQuery,
    InspectionDetail,
    PageKey,
    Shift,
    Sort,
)
from station.app.quality import (
    HistoryPage as Page_,
)
from station.app.roles import Action, PermissionDenied
from station.core.errors import StationError
from station.core.result import Verdict
from station.gui.dispositions import DispositionPanel
from station.gui.image_view import ImageView, to_qimage
from station.gui.pages import Page
from station.gui.sheets import Sheet
from station.gui.theme import Theme, load_theme
from station.gui.widgets import big_button, caption, stat

if TYPE_CHECKING:
    from station.app import StationApp

log = logging.getLogger(__name__)

PAGE_SIZE = 50
THUMB_PX = 64
ROW_PX = 72
COLUMNS = ("", "Part", "Time", "Model", "Score / limit", "Verdict", "Disposition")
SORTS = (
    ("Newest first", Sort.NEWEST),
    ("Oldest first", Sort.OLDEST),
    ("Highest score", Sort.SCORE_HIGH),
    ("Lowest score", Sort.SCORE_LOW),
)
VERDICTS: tuple[tuple[str, tuple[Verdict, ...]], ...] = (
    ("All verdicts", ()),
    ("NOK", (Verdict.NOK,)),
    ("CHECK", (Verdict.CHECK,)),
    ("NOK + CHECK", (Verdict.NOK, Verdict.CHECK)),
    ("OK", (Verdict.OK,)),
)
DISPOSITIONS: tuple[tuple[str, str | None], ...] = (
    ("Any disposition", None),
    ("No disposition yet", NO_DISPOSITION),
    *((LABELS[d], d.value) for d in Disposition),
)
COMBO = "min-height: 60px;"


def _when_options(
    shifts: list[Shift], now: float
) -> list[tuple[str, tuple[float | None, float | None]]]:
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[tuple[str, tuple[float | None, float | None]]] = []
    if shifts:
        out.append((f"This shift ({shifts[0].key})", (shifts[0].start, shifts[0].end)))
    if len(shifts) > 1:
        out.append((f"Previous shift ({shifts[1].key})", (shifts[1].start, shifts[1].end)))
    out += [
        ("Today", (day.timestamp(), None)),
        ("Last 24 hours", (now - 86400, None)),
        ("Last 7 days", (now - 7 * 86400, None)),
        ("Last 30 days", (now - 30 * 86400, None)),
        ("All time", (None, None)),
    ]
    out += [(f"Shift {s.label}", (s.start, s.end)) for s in shifts[2:]]
    return out


def touch_combo(parent: QWidget) -> QComboBox:
    """A combo box with finger-sized entries, sized by its layout rather than its longest entry
    (a shift's label would otherwise widen the page past the screen)."""
    c = QComboBox(parent)
    c.setView(QListView(c))  # item heights then come from the style sheet
    c.setStyleSheet(COMBO)
    c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    c.setMinimumContentsLength(6)
    return c


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None


class _Done(QObject):
    """Carries a background job's outcome back to the GUI thread."""

    finished = Signal(object)


class PartDetail(QWidget):
    """One recorded part: picture with overlay, its values, dispositions, the events around."""

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(16)
        left = QVBoxLayout()
        self.view = ImageView(theme, self, interactive=False)
        left.addWidget(self.view, 1)
        self.no_image = caption("", self, wrap=True)
        left.addWidget(self.no_image)
        self.overlay_button = QPushButton("Overlay ON", self)
        self.overlay_button.setCheckable(True)
        self.overlay_button.setChecked(True)
        self.overlay_button.toggled.connect(self._overlay)
        left.addWidget(self.overlay_button)
        lay.addLayout(left, 3)

        side = QWidget(self)
        side_lay = QVBoxLayout(side)
        side_lay.setContentsMargins(0, 0, 8, 0)
        grid = QGridLayout()
        grid.setVerticalSpacing(2)
        grid.setHorizontalSpacing(16)
        self.values: dict[str, QLabel] = {}
        for i, (key, text) in enumerate(
            (
                ("verdict", "Verdict"),
                ("score", "Score / limit"),
                ("time", "Time"),
                ("model", "Product / model"),
                ("latency", "Latency"),
            )
        ):
            grid.addWidget(caption(text, side), i, 0)
            v = stat("-", side)
            v.setStyleSheet("font-size: 16pt;")
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(v, i, 1)
            self.values[key] = v
        grid.setColumnStretch(1, 1)
        side_lay.addLayout(grid)
        side_lay.addWidget(caption("Disposition", side))
        self.dispose = DispositionPanel(side)
        side_lay.addWidget(self.dispose)
        self.message = caption("", side, wrap=True)
        side_lay.addWidget(self.message)
        side_lay.addWidget(caption("Dispositions of this part", side))
        self.history = QLabel("", side)
        self.history.setWordWrap(True)
        self.history.setStyleSheet("font-size: 13pt;")
        side_lay.addWidget(self.history)
        side_lay.addWidget(caption("Events two minutes either side", side))
        self.events = QLabel("", side)
        self.events.setWordWrap(True)
        self.events.setStyleSheet("font-size: 13pt;")
        side_lay.addWidget(self.events)
        side_lay.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(side)
        lay.addWidget(scroll, 2)
        self.detail: InspectionDetail | None = None

    def set_theme(self, theme: Theme) -> None:
        self.view.set_theme(theme)

    def _overlay(self, on: bool) -> None:
        self.overlay_button.setText("Overlay ON" if on else "Overlay OFF")
        self.view.set_overlay_enabled(on)

    def show_detail(self, d: InspectionDetail, choices: tuple[Disposition, ...]) -> None:
        self.detail = d
        r = d.row
        result = d.result()
        if result is not None:
            self.view.show_still(result)
            self.view.show()
            self.no_image.setText("")
        else:
            self.view.hide()
            self.no_image.setText(d.image_problem or "no image kept for this part")
        self.overlay_button.setVisible(result is not None and d.anomaly_map is not None)
        v = self.values
        v["verdict"].setText(r.verdict.value)
        check = f", check from {r.check_threshold:.3g}" if r.check_threshold is not None else ""
        v["score"].setText(f"{r.score:.3f} / {r.threshold:.3f}{check}")
        v["time"].setText(f"{r.when:%Y-%m-%d %H:%M:%S}")
        v["model"].setText(r.model_version)
        v["latency"].setText(f"{r.latency_ms:.0f} ms")
        self.message.setText("")
        standing = "None yet." if not d.dispositions else ""
        self.dispose.offer(choices, standing)
        self.history.setText(
            "\n".join(
                f"{x.when:%Y-%m-%d %H:%M}  {LABELS[x.kind]} - {x.user} ({x.role}): {x.reason}"
                for x in d.dispositions
            )
            or "-"
        )
        self.events.setText(
            "\n".join(f"{e.when:%H:%M:%S}  {e.kind}: {e.message}" for e in d.events) or "-"
        )


class ReportPanel(QWidget):
    """Pick a shift (and product), preview the report's pages, export PDF + CSV."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(10)
        row = QHBoxLayout()
        self.shift = touch_combo(self)
        self.product = touch_combo(self)
        self.destination = touch_combo(self)
        for label, combo in (("Shift", self.shift), ("Product", self.product),
                             ("Export to", self.destination)):  # fmt: skip
            col = QVBoxLayout()
            col.addWidget(caption(label, self))
            col.addWidget(combo)
            row.addLayout(col, 1)
        lay.addLayout(row)
        buttons = QHBoxLayout()
        self.preview_button = big_button("Preview", self, width=220)
        self.export_button = big_button("Export PDF + CSV", self, primary=True, width=320)
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.export_button)
        buttons.addStretch(1)
        lay.addLayout(buttons)
        self.message = stat("", self)
        self.message.setStyleSheet("font-size: 15pt;")
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.message)
        self.pages = QWidget(self)
        self.pages_lay = QHBoxLayout(self.pages)
        self.pages_lay.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.pages)
        lay.addWidget(scroll, 1)
        self._pictures: list[QLabel] = []

    def show_pages(self, files: list[Path]) -> None:
        for label in self._pictures:
            self.pages_lay.removeWidget(label)
            label.deleteLater()
        self._pictures = []
        for f in files:
            label = QLabel(self.pages)
            pix = QPixmap(str(f))
            if not pix.isNull():
                label.setPixmap(
                    pix.scaledToHeight(
                        max(200, self.height() - 260), Qt.TransformationMode.SmoothTransformation
                    )
                )
            self.pages_lay.addWidget(label)
            self._pictures.append(label)
        self.pages_lay.addStretch(1)


class HistoryPage(Page):
    """The history browser and the shift reports."""

    title = "History and reports"
    action = Action.VIEW_HISTORY

    def __init__(
        self, app: StationApp, parent: QWidget | None = None, *, theme: Theme | None = None
    ) -> None:
        super().__init__(app, parent)
        self.theme = theme or load_theme(app.cfg.gui.theme)
        self.session: Session | None = None
        self.page: Page_ | None = None
        self.keys: list[PageKey | None] = [None]  # where each page shown so far starts
        self.rows: list[Any] = []
        self._thumb_queue: list[int] = []
        self._busy = False
        self._build_filters()
        self._build_table()
        self._build_sheets()
        self._thumbs = QTimer(self)
        self._thumbs.setInterval(0)
        self._thumbs.timeout.connect(self._next_thumb)

    # -- building ---------------------------------------------------------------------------
    def _combo(self, items: list[tuple[str, Any]]) -> QComboBox:
        c = touch_combo(self)
        for text, data in items:
            c.addItem(text, data)
        c.currentIndexChanged.connect(lambda _i: self.search())
        return c

    def _build_filters(self) -> None:
        # The heading shares its row with the report button: the list needs the height.
        item = self.layout_.itemAt(0)
        heading = item.widget() if item is not None else None
        assert heading is not None
        self.layout_.removeWidget(heading)
        top = QHBoxLayout()
        top.addWidget(heading, 1)
        self.report_button = big_button("Shift report", self, width=260)
        self.report_button.clicked.connect(self.open_report)
        top.addWidget(self.report_button)
        self.layout_.insertLayout(0, top)

        row1 = QHBoxLayout()
        row1.setSpacing(8)
        self.when = self._combo([])
        self.product = self._combo([("All products", None)])
        self.version = self._combo([("All versions", None)])
        self.verdict = self._combo([(t, v) for t, v in VERDICTS])
        self.disposition = self._combo([(t, v) for t, v in DISPOSITIONS])
        for w, stretch in ((self.when, 3), (self.product, 2), (self.version, 2),
                           (self.verdict, 2), (self.disposition, 2)):  # fmt: skip
            row1.addWidget(w, stretch)
        self.product.currentIndexChanged.connect(lambda _i: self._fill_versions())
        self.layout_.addLayout(row1)

        row2 = QHBoxLayout()
        row2.setSpacing(8)
        self.part = QLineEdit(self)
        self.part.setPlaceholderText("Part id (scan or type the start)")
        self.part.returnPressed.connect(self.search)
        row2.addWidget(self.part, 4)
        self.score_min = QLineEdit(self)
        self.score_min.setPlaceholderText("Min score")
        self.score_max = QLineEdit(self)
        self.score_max.setPlaceholderText("Max score")
        for edit in (self.score_min, self.score_max):
            edit.setValidator(QDoubleValidator(-1e9, 1e9, 4, edit))
            edit.returnPressed.connect(self.search)
            row2.addWidget(edit, 2)
        self.sort = self._combo([(t, s) for t, s in SORTS])
        row2.addWidget(self.sort, 3)
        for edit in (self.part, self.score_min, self.score_max):
            edit.setStyleSheet("min-height: 52px;")
        self.search_button = big_button("Search", self, primary=True, width=150)
        self.search_button.clicked.connect(self.search)
        row2.addWidget(self.search_button)
        self.reset_button = big_button("Reset", self, width=130)
        self.reset_button.clicked.connect(self.reset_filters)
        row2.addWidget(self.reset_button)
        self.layout_.addLayout(row2)
        self.layout_.setSpacing(8)

    def _build_table(self) -> None:
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(ROW_PX)
        self.table.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(0, THUMB_PX + 12)
        for col in (1, 2, 4, 5):
            head.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.cellClicked.connect(lambda r, _c: self.open_row(r))
        self.layout_.addWidget(self.table, 1)

        pager = QHBoxLayout()
        self.newer_button = big_button("< Newer", self, width=200)
        self.newer_button.clicked.connect(self.previous_page)
        self.older_button = big_button("Older >", self, width=200)
        self.older_button.clicked.connect(self.next_page)
        self.status = stat("", self)
        self.status.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pager.addWidget(self.newer_button)
        pager.addWidget(self.status, 1)
        pager.addWidget(self.older_button)
        self.layout_.addLayout(pager)

    def _build_sheets(self) -> None:
        self.detail = PartDetail(self.theme)
        self.detail.dispose.chosen.connect(self._dispose)
        self.detail_sheet = Sheet("Part", self.detail, self, margin=0.0)
        self.report = ReportPanel()
        self.report.preview_button.clicked.connect(lambda: self._report(preview=True))
        self.report.export_button.clicked.connect(lambda: self._report(preview=False))
        self.report_sheet = Sheet("Shift report", self.report, self, margin=0.0)
        self._done = _Done(self)
        self._done.finished.connect(lambda fn: fn())

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.detail.set_theme(theme)

    # -- page lifecycle -----------------------------------------------------------------------
    def refresh(self, session: Session) -> None:
        """Fill the choices and show the first page of the current filter."""
        self.session = session
        self.report_button.setVisible(self.app.may(session, Action.REPORT))
        shifts = self.app.shifts(21)
        self._shifts = shifts
        keep = self.when.currentText()
        with _Quiet(self.when, self.product):
            self.when.clear()
            for text, window in _when_options(shifts, time.time()):
                self.when.addItem(text, window)
            i = self.when.findText(keep)
            self.when.setCurrentIndex(max(0, i))
            current = self.product.currentData()
            self.product.clear()
            self.product.addItem("All products", None)
            for name in self.app.product_names():
                self.product.addItem(name, name)
            j = self.product.findData(current)
            self.product.setCurrentIndex(max(0, j))
        self._fill_versions(search=False)
        self.search()

    def end_session(self) -> None:
        self.session = None
        self.detail_sheet.dismiss()
        self.report_sheet.dismiss()
        self.table.setRowCount(0)
        self.rows = []

    def _fill_versions(self, *, search: bool = True) -> None:
        if self.session is None:
            return
        current = self.version.currentData()
        try:
            versions = self.app.history_versions(self.session, self.product.currentData())
        except (PermissionDenied, StationError) as exc:
            self.status.setText(str(exc))
            return
        with _Quiet(self.version):
            self.version.clear()
            self.version.addItem("All versions", None)
            for v in versions:
                self.version.addItem(v, v)
            self.version.setCurrentIndex(max(0, self.version.findData(current)))
        if search:
            self.search()

    def reset_filters(self) -> None:
        with _Quiet(self.when, self.product, self.version, self.verdict, self.disposition,
                    self.sort):  # fmt: skip
            for c in (self.when, self.product, self.version, self.verdict, self.disposition,
                      self.sort):  # fmt: skip
                c.setCurrentIndex(0)
            for e in (self.part, self.score_min, self.score_max):
                e.clear()
        self._fill_versions()

    # -- querying ------------------------------------------------------------------------------
    def query(self) -> HistoryQuery:
        """The filter and sort the controls show."""
        since, until = self.when.currentData() or (None, None)
        return HistoryQuery(
            HistoryFilter(
                since=since,
                until=until,
                product=self.product.currentData(),
                model_version=self.version.currentData(),
                verdicts=tuple(self.verdict.currentData() or ()),
                disposition=self.disposition.currentData(),
                score_min=_number(self.score_min.text()),
                score_max=_number(self.score_max.text()),
                part_id=self.part.text().strip() or None,
            ),
            sort=self.sort.currentData() or Sort.NEWEST,
            page_size=PAGE_SIZE,
        )

    def search(self) -> None:
        """Show the first page of the current filter."""
        self.keys = [None]
        self._show(None)

    def next_page(self) -> None:
        if self.page is not None and self.page.next_key is not None:
            self.keys.append(self.page.next_key)
            self._show(self.page.next_key)

    def previous_page(self) -> None:
        if len(self.keys) > 1:
            self.keys.pop()
            self._show(self.keys[-1])

    def _show(self, after: PageKey | None) -> None:
        if self.session is None:
            return
        t0 = time.perf_counter()
        try:
            page = self.app.history(self.session, self.query(), after)
        except (PermissionDenied, StationError) as exc:
            self.status.setText(str(exc))
            return
        self.query_ms = (time.perf_counter() - t0) * 1e3
        self.page = page
        self.rows = page.rows
        self._fill_table()
        first = (len(self.keys) - 1) * PAGE_SIZE
        if page.rows:
            self.status.setText(f"{first + 1}-{first + len(page.rows)} of {page.total_text}")
        else:
            self.status.setText("No parts match these filters.")
        self.newer_button.setEnabled(len(self.keys) > 1)
        self.older_button.setEnabled(page.next_key is not None)

    def _fill_table(self) -> None:
        t = self.table
        t.setRowCount(len(self.rows))
        colours = {
            Verdict.OK: self.theme.color("ok"),
            Verdict.CHECK: self.theme.color("check"),
            Verdict.NOK: self.theme.color("nok"),
        }
        for i, r in enumerate(self.rows):
            cells = (
                "",
                r.part_id or f"#{r.id}",
                f"{r.when:%Y-%m-%d %H:%M:%S}",
                r.model_version,
                f"{r.score:.2f} / {r.threshold:.2f}",
                r.verdict.value,
                LABELS[Disposition(r.disposition)] if r.disposition else "",
            )
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 5:
                    item.setForeground(QColor("#ffffff"))
                    item.setBackground(QColor(colours[r.verdict]))
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                t.setItem(i, j, item)
        t.scrollToTop()
        self._thumb_queue = [i for i, r in enumerate(self.rows) if r.image_path]
        self._thumbs.start()

    def _next_thumb(self) -> None:
        # One thumbnail per event-loop turn: the list is usable while the pictures arrive.
        if not self._thumb_queue or self.session is None:
            self._thumbs.stop()
            return
        i = self._thumb_queue.pop(0)
        if i >= len(self.rows):
            return
        try:
            rgb = self.app.thumbnail(self.session, self.rows[i], THUMB_PX)
        except (PermissionDenied, StationError):
            rgb = None
        item = self.table.item(i, 0)
        if rgb is not None and item is not None:
            item.setIcon(QIcon(QPixmap.fromImage(to_qimage(np.ascontiguousarray(rgb)))))

    # -- detail and dispositions -------------------------------------------------------------------
    def open_row(self, i: int) -> None:
        if 0 <= i < len(self.rows):
            self.open_part(self.rows[i].id)

    def open_part(self, row_id: int) -> None:
        """Open a recorded part's detail."""
        if self.session is None:
            return
        try:
            d = self.app.inspection(self.session, row_id)
        except (PermissionDenied, StationError) as exc:
            self.status.setText(str(exc))
            return
        choices = self.app.disposition_choices(self.session, d.row.verdict)
        self.detail.show_detail(d, choices)
        self.detail_sheet.heading.setText(
            f"{d.row.part_id or '#' + str(d.row.id)}: {d.row.verdict.value}, score "
            f"{d.row.score:.2f}"
        )
        self.detail_sheet.open()

    def _dispose(self, kind: str, reason: str) -> None:
        d = self.detail.detail
        if d is None or self.session is None:
            return
        try:
            self.app.dispose(self.session, d.row.id, kind, reason)
        except (PermissionDenied, StationError) as exc:
            self.detail.message.setText(str(exc))
            return
        self.open_part(d.row.id)  # the part's dispositions as now recorded
        self.detail.message.setText(f"Recorded: {LABELS[Disposition(kind)]} - {reason}")
        # The list shows the standing disposition: refresh the page in place.
        self._show(self.keys[-1])

    # -- reports ------------------------------------------------------------------------------
    def open_report(self) -> None:
        if self.session is None:
            return
        r = self.report
        r.shift.clear()
        for s in self._shifts:
            r.shift.addItem(f"{s.key}   ({s.label})", s)
        r.product.clear()
        r.product.addItem("All products", None)
        for name in self.app.product_names():
            r.product.addItem(name, name)
        r.destination.clear()
        for label, path in self.app.report_destinations():
            r.destination.addItem(f"{label}: {path}", str(path))
        r.message.setText("Pick a shift; Preview shows its first pages.")
        r.show_pages([])
        self.report_sheet.open()

    def _report(self, *, preview: bool) -> None:
        if self.session is None or self._busy:
            return
        r = self.report
        shift, product = r.shift.currentData(), r.product.currentData()
        folder = Path(r.destination.currentData() or ".")
        session = self.session
        self._busy = True
        r.message.setText("Writing the report ...")
        for b in (r.preview_button, r.export_button):
            b.setEnabled(False)

        def work() -> None:
            try:
                if preview:
                    files, pictures = self.app.preview_report(session, shift, product=product)
                    out: Any = ("preview", files, pictures)
                else:
                    files = self.app.shift_report(session, shift, product=product, folder=folder)
                    out = ("export", files, [])
            except (PermissionDenied, StationError, OSError) as exc:
                out = ("error", str(exc), [])
            except Exception as exc:  # a bug must not leave the sheet waiting forever
                log.exception("shift report failed")
                out = ("error", f"{type(exc).__name__}: {exc}", [])
            self._done.finished.emit(lambda: self._report_done(out))

        threading.Thread(target=work, name="gui-report", daemon=True).start()

    def _report_done(self, out: Any) -> None:
        self._busy = False
        r = self.report
        for b in (r.preview_button, r.export_button):
            b.setEnabled(True)
        kind, files, pictures = out
        if kind == "error":
            r.message.setText(f"Report not written: {files}")
            return
        c = files.counts
        summary = (
            f"Shift {files.shift.key}: {c.get('inspected', 0)} inspected, {c.get('ok', 0)} OK, "
            f"{c.get('check', 0)} CHECK, {c.get('nok', 0)} NOK"
        )
        if kind == "preview":
            r.show_pages(pictures)
            if files.pdf is not None:
                shutil.rmtree(files.pdf.parent, ignore_errors=True)
            more = "" if pictures else " (no page pictures: pdftoppm is not installed)"
            r.message.setText(summary + more)
        else:
            r.message.setText(f"{summary}\nWritten: {files.pdf}\n         {files.csv}")


class _Quiet:
    """Block the widgets' signals while the page fills them (no search per added item)."""

    def __init__(self, *widgets: QWidget) -> None:
        self.widgets = widgets

    def __enter__(self) -> None:
        for w in self.widgets:
            w.blockSignals(True)

    def __exit__(self, *exc: object) -> None:
        for w in self.widgets:
            w.blockSignals(False)
