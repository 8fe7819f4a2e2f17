"""Drift light (none / warning / critical) and the panel behind it: statistics and histograms."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from station.core.result import DriftLevel, DriftStatus
from station.gui.theme import Theme

_LIGHT_TEXT = {
    None: "Drift\nno data",
    DriftLevel.NONE: "Drift\nnone",
    DriftLevel.WARNING: "Drift\nWARNING",
    DriftLevel.CRITICAL: "Drift\nCRITICAL",
}


def drift_level(status: DriftStatus | None) -> DriftLevel | None:
    """The level the light shows (None while there are too few OK parts)."""
    return None if status is None else status.level


class DriftLight(QPushButton):
    """A large button coloured by the drift level; tapping it opens the drift panel."""

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(_LIGHT_TEXT[None], parent)
        self.setObjectName("DriftLight")
        self.level: DriftLevel | None = None
        self._theme = theme
        self.setMinimumSize(150, 72)
        self._apply()

    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self._theme = theme
        self._apply()

    def set_level(self, level: DriftLevel | None) -> bool:
        """Show `level`; restyles only on a change (a style sheet is not free); True if so."""
        if level == self.level:
            return False
        self.level = level
        self._apply()
        return True

    def _apply(self) -> None:
        t = self._theme
        bg, fg = {
            None: (t.color("panel2"), t.color("text")),
            DriftLevel.NONE: (t.color("ok"), t.color("on_verdict")),
            DriftLevel.WARNING: (t.color("amber"), t.color("amber_text")),
            DriftLevel.CRITICAL: (t.color("nok"), t.color("on_verdict")),
        }[self.level]
        self.setText(_LIGHT_TEXT[self.level])
        self.setStyleSheet(
            f"QPushButton#DriftLight {{ background: {bg}; color: {fg}; border-color: {bg};"
            " font-size: 16pt; padding: 4px 10px; min-width: 126px; min-height: 72px; }"
        )


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


class DriftPanel(QWidget):
    """The drift statistics and the histogram of recent OK scores against the baseline."""

    def __init__(
        self,
        theme: Theme,
        parent: QWidget | None = None,
        *,
        window: int = 200,
        min_samples: int = 50,
    ) -> None:
        """`window` and `min_samples` are the drift config's: the panel says how far along it is."""
        super().__init__(parent)
        self._theme = theme
        self.window_size = window
        self.min_samples = min(min_samples, window)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(12)
        self.explain = QLabel(
            "Compares the scores of recent good parts with the scores the model was "
            "calibrated on. Drift means light, focus or material changed: call a technician.",
            self,
        )
        self.explain.setWordWrap(True)
        self.explain.setObjectName("Caption")
        lay.addWidget(self.explain)
        grid_box = QFrame(self)
        grid = QGridLayout(grid_box)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(28)
        self.stats: dict[str, QLabel] = {}
        for i, (key, caption) in enumerate(
            (
                ("level", "Level"),
                ("ks", "KS statistic (p-value)"),
                ("mean", "Mean shift"),
                ("window", "Window (good parts)"),
            )
        ):
            cap = QLabel(caption, grid_box)
            cap.setObjectName("Caption")
            val = QLabel("-", grid_box)
            val.setObjectName("Value")
            grid.addWidget(cap, 0, i)
            grid.addWidget(val, 1, i)
            self.stats[key] = val
        lay.addWidget(grid_box)
        self.plot = pg.PlotWidget(self)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMinimumHeight(220)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextSize="14pt")
        self.baseline_curve = self.plot.plot(name="baseline (calibration)", stepMode="center")
        self.recent_curve = self.plot.plot(name="recent good parts", stepMode="center")
        lay.addWidget(self.plot, 1)
        self.status: DriftStatus | None = None
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self._theme = theme
        self.plot.setBackground(QColor(theme.color("plot_bg")))
        font = QFont()
        font.setPointSize(12)
        for name in ("left", "bottom"):
            ax = self.plot.getAxis(name)
            ax.setPen(pg.mkPen(QColor(theme.color("plot_grid"))))
            ax.setTextPen(pg.mkPen(QColor(theme.color("text"))))
            ax.setStyle(tickFont=font)
        label_style = {"color": theme.color("muted"), "font-size": "14pt"}
        self.plot.getAxis("bottom").setLabel("score", **label_style)
        self.plot.getAxis("left").setLabel("% of parts", **label_style)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        base = QColor(theme.color("accent"))
        recent = QColor(theme.color("plot_line"))
        self.baseline_curve.setPen(pg.mkPen(base, width=3))
        fill = QColor(base)
        fill.setAlpha(70)
        self.baseline_curve.setBrush(pg.mkBrush(fill))
        self.baseline_curve.setFillLevel(0)
        self.recent_curve.setPen(pg.mkPen(recent, width=4))
        for _sample, label in self.legend.items:
            label.setText(label.text, color=theme.color("text"))
        self.show_status(self.status, force=True)

    def show_status(self, status: DriftStatus | None, *, force: bool = False) -> None:
        """Fill in the statistics and histograms of `status` (None: not enough parts yet)."""
        if status == self.status and not force:
            return
        self.status = status
        if status is None:
            for key in self.stats:
                self.stats[key].setText("-")
            self.stats["level"].setText("no data yet")
            self.baseline_curve.setData([], [])
            self.recent_curve.setData([], [])
            return
        n = len(status.recent)
        if n < self.min_samples:
            # The monitor grades nothing before min_samples: say so rather than show "NONE".
            self.stats["level"].setText(f"needs {self.min_samples - n} more")
            self.stats["ks"].setText("-")
        else:
            self.stats["level"].setText(status.level.value.upper())
            ks, p = _fmt(status.ks_statistic), _fmt(status.ks_pvalue, 3)
            self.stats["ks"].setText(f"{ks} (p {p})")
        self.stats["mean"].setText(f"{status.mean_shift_sd:+.2f} sd")
        self.stats["window"].setText(f"{n} of {self.window_size}")
        base = np.asarray(status.baseline, np.float64)
        recent = np.asarray(status.recent, np.float64)
        both = np.concatenate([base, recent])
        both = both[np.isfinite(both)]
        if both.size == 0:
            self.baseline_curve.setData([], [])
            self.recent_curve.setData([], [])
            return
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, 26)
        for curve, values in ((self.baseline_curve, base), (self.recent_curve, recent)):
            if values.size:
                counts, _ = np.histogram(values, edges)
                curve.setData(edges, 100.0 * counts / values.size)
            else:
                curve.setData([], [])

    def text(self, key: str) -> str:
        """The text of one statistic as shown."""
        return self.stats[key].text()


__all__ = ["DriftLight", "DriftPanel", "drift_level"]
