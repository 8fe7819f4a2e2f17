"""Score trend: the recent parts' scores as points coloured by verdict, and the threshold line."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from station.core.result import Verdict
from station.gui.bridge import ScorePoint
from station.gui.theme import Theme

REDRAW_S = 0.25  # pyqtgraph redraws cost milliseconds: 4 per second is plenty for a trend


class TrendPlot(QFrame):
    """The last `points` scores; redraws at most every REDRAW_S, and only when points arrived."""

    def __init__(self, theme: Theme, parent: QWidget | None = None, *, points: int = 200) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        self._points: deque[ScorePoint] = deque(maxlen=points)
        self._dirty = False
        self.last_draw = 0.0
        self._threshold: float | None = None
        self._y_range: tuple[float, float] | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 6)
        lay.setSpacing(2)
        self.title = QLabel(f"Score trend: last {points} parts", self)
        self.title.setObjectName("Caption")
        lay.addWidget(self.title)
        self.plot = pg.PlotWidget(self)
        self.plot.setMinimumHeight(90)
        # Touch: a stray swipe must not pan the plot away, and there is no context menu to find.
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.getPlotItem().setClipToView(True)
        lay.addWidget(self.plot, 1)
        self.ok_item = pg.ScatterPlotItem(size=10, pen=None, symbol="o")
        self.nok_item = pg.ScatterPlotItem(size=16, pen=None, symbol="t1")
        self.check_item = pg.ScatterPlotItem(size=14, pen=None, symbol="d")
        self.limit = pg.InfiniteLine(angle=0, movable=False)
        self.plot.addItem(self.limit)
        self.plot.addItem(self.ok_item)
        self.plot.addItem(self.nok_item)
        self.plot.addItem(self.check_item)
        self.limit.hide()
        self.plot.setXRange(-(points - 1), 0, padding=0.02)
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self.plot.setBackground(QColor(theme.color("plot_bg")))
        axis_pen = pg.mkPen(QColor(theme.color("plot_grid")), width=1)
        text_pen = pg.mkPen(QColor(theme.color("text")))
        font = QFont()
        font.setPointSize(12)
        for name in ("left", "bottom"):
            ax = self.plot.getAxis(name)
            ax.setPen(axis_pen)
            ax.setTextPen(text_pen)
            ax.setStyle(tickFont=font)
        self.plot.getAxis("bottom").setLabel(
            "parts ago", color=theme.color("muted"), **{"font-size": "12pt"}
        )
        self.ok_item.setBrush(pg.mkBrush(QColor(theme.color("ok")).lighter(135)))
        self.nok_item.setBrush(pg.mkBrush(QColor(theme.color("nok")).lighter(120)))
        self.nok_item.setPen(pg.mkPen(QColor(theme.color("text")), width=1))
        self.check_item.setBrush(pg.mkBrush(QColor(theme.color("check")).lighter(130)))
        self.check_item.setPen(pg.mkPen(QColor(theme.color("text")), width=1))
        self.limit.setPen(
            pg.mkPen(QColor(theme.color("plot_line")), width=3, style=Qt.PenStyle.DashLine)
        )
        self._dirty = True

    def add_points(self, points: list[ScorePoint]) -> None:
        """Queue new parts; drawn on the next `redraw()`."""
        self._points.extend(points)
        self._dirty = True

    def set_threshold(self, threshold: float | None) -> None:
        """Move the threshold line (hidden without a model)."""
        if threshold == self._threshold:
            return
        self._threshold = threshold
        if threshold is None or not np.isfinite(threshold):
            self.limit.hide()
        else:
            self.limit.setValue(threshold)
            self.limit.show()
        self._dirty = True

    def waiting_s(self, now: float) -> float:
        """How long new points have waited for a redraw (0 when everything is drawn)."""
        return now - self.last_draw if self._dirty else 0.0

    def redraw(self, now: float | None = None, *, force: bool = False) -> bool:
        """Redraw if points arrived and the last redraw is REDRAW_S old; True when drawn.

        The x axis is "parts ago" (fixed, -N .. 0) and the y range only moves when a point
        leaves it or it is far too wide: unchanged axes are not re-laid out nor repainted,
        which is most of what a pyqtgraph redraw costs.
        """
        now = time.monotonic() if now is None else now
        if not self._dirty or (not force and now - self.last_draw < REDRAW_S):
            return False
        self.last_draw = now
        self._dirty = False
        pts = list(self._points)
        if not pts:
            self.ok_item.setData(x=[], y=[])
            self.nok_item.setData(x=[], y=[])
            self.check_item.setData(x=[], y=[])
            return True
        last = pts[-1].seq
        x = np.fromiter((p.seq - last for p in pts), np.float64, len(pts))
        y = np.fromiter((p.score for p in pts), np.float64, len(pts))
        nok = np.fromiter((p.verdict == Verdict.NOK for p in pts), bool, len(pts))
        check = np.fromiter((p.verdict == Verdict.CHECK for p in pts), bool, len(pts))
        ok = ~(nok | check)
        for item, mask in ((self.ok_item, ok), (self.nok_item, nok), (self.check_item, check)):
            # NOK and CHECK points are rare: an item that had none and still has none keeps
            # its (empty) data, a third of the redraw's cost when no band is configured.
            if mask.any() or len(item.data):
                item.setData(x=x[mask], y=y[mask])
        if self._threshold is None:
            self.set_threshold(pts[-1].threshold)
            self._dirty = False
        self._fit_y(float(y.min()), float(y.max()))
        return True

    def _fit_y(self, lo: float, hi: float) -> None:
        if self._threshold is not None and np.isfinite(self._threshold):
            lo, hi = min(lo, self._threshold), max(hi, self._threshold)
        span = max(hi - lo, 1e-6)
        cur = self._y_range
        if cur is not None:
            inside = cur[0] <= lo and hi <= cur[1]
            too_wide = (cur[1] - cur[0]) > 3.0 * span
            if inside and not too_wide:
                return
        # New range with a margin, so the next few parts fit without another change.
        self._y_range = (lo - 0.25 * span, hi + 0.25 * span)
        self.plot.setYRange(*self._y_range, padding=0)

    def counts(self) -> tuple[int, int]:
        """(OK points, NOK points) on the plot now."""
        return len(self.ok_item.data), len(self.nok_item.data)
