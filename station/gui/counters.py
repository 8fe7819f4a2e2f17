"""Shift counters: inspected, NOK, NOK rate, throughput, latency p50/p95, dropped frames."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics, QPainter, QPaintEvent, QPalette, QResizeEvent
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from station.core.result import Counters

# (key, caption) in reading order: the two numbers an operator checks first come first.
TILES = (
    ("inspected", "Inspected"),
    ("nok", "NOK"),
    ("nok_rate", "NOK rate"),
    ("throughput", "Parts / min"),
    ("latency", "Latency p50 / p95"),
    ("dropped", "Dropped frames"),
)


def shift_captions(shift: str) -> tuple[str, ...]:
    """Captions for the first tile, longest first: which shift the counts belong to
    ('2026-11-22/14' -> 'Inspected since 14:00'), so an operator knows they restart at shift
    change. The panel shows the longest that fits its column."""
    hour = shift.rpartition("/")[2]
    if not hour.isdigit():
        return ("Inspected",)
    return (f"Inspected since {hour}:00", f"Since {hour}:00")


def counter_texts(c: Counters, band: bool = False) -> dict[str, str]:
    """The text of each tile for one set of counters; with a check band the NOK tile also
    counts the parts sent to a manual check ('12 / 3')."""
    return {
        "inspected": f"{c.inspected:,}",
        "nok": f"{c.nok:,} / {c.check:,}" if band else f"{c.nok:,}",
        "nok_rate": f"{100.0 * c.nok_rate:.1f} %",
        "throughput": f"{c.throughput_per_min:.0f}",
        "latency": f"{c.latency_p50_ms:.0f} / {c.latency_p95_ms:.0f} ms",
        # Frames refused before a verdict (unreadable, too large) beside the dropped ones: both
        # are parts the station did not judge.
        "dropped": f"{c.dropped:,} + {c.bad_frames:,} bad" if c.bad_frames else f"{c.dropped:,}",
    }


class Readout(QWidget):
    """A large number that shrinks its font to fit its width instead of being cut off.

    Its size hint does not follow the text, so a new value never re-lays out the panel.
    """

    def __init__(self, parent: QWidget | None = None, *, points: int = 26, min_points: int = 18):
        super().__init__(parent)
        self.setObjectName("Value")
        self._text = "-"
        self._points = points
        self._min_points = min_points
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        font = QFont(self.font())
        font.setPointSize(points)
        font.setBold(True)
        self.setFixedHeight(QFontMetrics(font).height())

    def text(self) -> str:
        """The value shown."""
        return self._text

    def setText(self, text: str) -> None:
        """Show `text` (repaints this widget only)."""
        if text != self._text:
            self._text = text
            self.update()

    def sizeHint(self) -> QSize:
        return QSize(120, self.height())

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        font = QFont(self.font())
        font.setBold(True)
        size = self._points
        font.setPointSize(size)
        while (
            size > self._min_points
            and QFontMetrics(font).horizontalAdvance(self._text) > self.width()
        ):
            size -= 1
            font.setPointSize(size)
        p.setFont(font)
        p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        p.drawText(
            self.rect(), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, self._text
        )
        p.end()


class CountersPanel(QFrame):
    """A 3 x 2 grid of large numbers with captions above them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        grid = QGridLayout(self)
        grid.setContentsMargins(12, 8, 12, 8)
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(6)
        self.values: dict[str, Readout] = {}
        self.captions: dict[str, QLabel] = {}
        for i, (key, caption) in enumerate(TILES):
            tile = QWidget(self)
            box = QVBoxLayout(tile)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(0)
            cap = QLabel(caption, tile)
            cap.setObjectName("Caption")
            value = Readout(tile)
            cap.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            box.addWidget(cap)
            box.addWidget(value)
            grid.addWidget(tile, i // 3, i % 3)
            # The middle column holds the widest value (latency "p50 / p95 ms").
            grid.setColumnStretch(i % 3, 4 if i % 3 == 1 else 3)
            self.values[key] = value
            self.captions[key] = cap
        self._shown: dict[str, str] = {}
        self._shift_captions: tuple[str, ...] = ("Inspected",)

    def set_counters(self, counters: Counters, *, band: bool = False) -> bool:
        """Show `counters`; True when a number changed (unchanged ones are not touched).
        `band`: the model has a check band (or parts were sent to a check this shift)."""
        changed = False
        band = band or counters.check > 0
        caption = "NOK / CHECK" if band else "NOK"
        if self.captions["nok"].text() != caption:
            self.captions["nok"].setText(caption)
            changed = True
        captions = shift_captions(counters.shift)
        if captions != self._shift_captions:
            self._shift_captions = captions
            self._fit_shift_caption()
            changed = True
        for key, text in counter_texts(counters, band).items():
            if self._shown.get(key) != text:
                self.values[key].setText(text)
                self._shown[key] = text
                changed = True
        return changed

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_shift_caption()

    def _fit_shift_caption(self) -> None:
        cap = self.captions["inspected"]
        fm = QFontMetrics(cap.font())
        fits = [c for c in self._shift_captions if fm.horizontalAdvance(c) <= cap.width()]
        cap.setText(fits[0] if fits else self._shift_captions[-1])

    def text(self, key: str) -> str:
        """The text a tile shows now (tests read the screen, not the model)."""
        return self.values[key].text()
