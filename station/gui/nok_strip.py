"""A strip of the latest NOK parts; tapping one opens it large with overlay, score and time."""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import cv2
import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractButton,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from station.core.overlay import compose, fit_size
from station.core.result import InspectionResult, Verdict
from station.gui.dispositions import DispositionPanel
from station.gui.image_view import ImageView, to_qimage
from station.gui.theme import Theme

KEEP_SIDE = 1024  # NOK parts kept for the detail view are reduced to this long side
THUMB_ASPECT = 1.3  # width / height: room for "score  hh:mm" under a square picture


def reduced(result: InspectionResult, side: int = KEEP_SIDE) -> InspectionResult:
    """A copy small enough to keep a dozen of: image and map scaled to `side` (long side)."""
    h, w = result.image.shape[:2]
    if max(h, w) <= side:
        return result
    tw, th = fit_size(h, w, side, side)
    image = cv2.resize(result.image, (tw, th), interpolation=cv2.INTER_AREA)
    amap = result.anomaly_map
    if amap is not None:
        amap = cv2.resize(
            amap.astype(np.float32, copy=False), (tw, th), interpolation=cv2.INTER_LINEAR
        )
    return dataclasses.replace(result, image=image, anomaly_map=amap)


def clock(t: float) -> str:
    """Local wall-clock time of an epoch timestamp."""
    return time.strftime("%H:%M:%S", time.localtime(t))


class Thumb(QAbstractButton):
    """One NOK part: its picture with the overlay, the score and the time under it.

    The whole card is drawn once into a pixmap and only copied afterwards: a new NOK part moves
    every thumbnail along the strip, and drawing each card again (the rounded frame, the text,
    an RGB picture converted for the screen) took about half a millisecond per thumbnail.
    """

    def __init__(self, result: InspectionResult, theme: Theme, parent: QWidget | None = None):
        super().__init__(parent)
        self.result = result
        self._theme = theme
        self.setObjectName("Thumb")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._card: QPixmap | None = None
        self._card_key: tuple[int, int, float] | None = None

    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self._theme = theme
        self._card = None
        self.update()

    def _draw_card(self) -> QPixmap:
        ratio = self.devicePixelRatioF()
        card = QPixmap(self.size() * ratio)
        card.setDevicePixelRatio(ratio)
        card.fill(Qt.GlobalColor.transparent)
        t = self._theme
        p = QPainter(card)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(0, 0, self.width(), self.height()).adjusted(2, 2, -2, -2)
        # The frame says which: red for NOK, purple for a part sent to a manual check.
        flagged = "check" if self.result.verdict == Verdict.CHECK else "nok"
        p.setPen(QPen(QColor(t.color(flagged)), 3 if flagged == "check" else 1))
        p.setBrush(QColor(t.color("panel2")))
        p.drawRoundedRect(rect, 8, 8)
        font = QFont(self.font())
        font.setPointSize(12)
        font.setBold(True)
        p.setFont(font)
        line_h = p.fontMetrics().height()
        pic_box = rect.adjusted(4, 4, -4, -4 - line_h)
        r = self.result
        rgb = compose(  # kept alive until drawn: the QImage only wraps its pixels
            r.image,
            r.anomaly_map,
            r.threshold,
            (int(pic_box.width()), int(pic_box.height())),
            opacity=0.5,
            mark_peak=True,
        )
        img = to_qimage(rgb)
        p.drawImage(
            QRectF(
                pic_box.left() + (pic_box.width() - img.width()) / 2,
                pic_box.top() + (pic_box.height() - img.height()) / 2,
                img.width(),
                img.height(),
            ),
            img,
        )
        text_box = QRectF(rect.left(), rect.bottom() - line_h - 2, rect.width(), line_h)
        p.setPen(QColor(t.color("text")))
        p.drawText(
            text_box,
            Qt.AlignmentFlag.AlignCenter,
            f"{'CHECK ' if flagged == 'check' else ''}{self.result.score:.1f}  "
            f"{clock(self.result.timestamp)[:5]}",
        )
        p.end()
        return card

    def paintEvent(self, event: QPaintEvent) -> None:
        key = (self.width(), self.height(), self.devicePixelRatioF())
        if self._card is None or self._card_key != key:
            self._card, self._card_key = self._draw_card(), key
        p = QPainter(self)
        p.drawPixmap(0, 0, self._card)
        if self.isDown():
            p.fillRect(QRectF(self.rect()).adjusted(2, 2, -2, -2), QColor(255, 255, 255, 60))
        p.end()


class NokStrip(QFrame):
    """The newest NOK parts, newest on the left; emits `opened(result)` when one is tapped.

    It shows as many as fit at the strip's height (thumbnails never shrink below a finger's
    width) and never asks for more width than it gets: on a smaller screen the oldest
    thumbnails go, on a larger one they come back from the kept results.
    """

    opened = Signal(object)

    def __init__(self, theme: Theme, parent: QWidget | None = None, *, keep: int = 12) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        self._theme = theme
        self.results: deque[InspectionResult] = deque(maxlen=keep)
        self.thumbs: list[Thumb] = []
        # The strip takes the width it is given; its thumbnails must not hold the window wide.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumHeight(112)
        self.preferred_height = 128
        lay = QHBoxLayout(self)
        lay.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
        lay.setContentsMargins(10, 6, 10, 6)
        lay.setSpacing(8)
        self.caption = QLabel("Latest\nNOK parts", self)
        self.caption.setObjectName("Caption")
        self.caption.setFixedWidth(120)
        lay.addWidget(self.caption)
        self.row = QHBoxLayout()
        self.row.setSpacing(8)
        lay.addLayout(self.row, 1)
        self.empty = QLabel("No NOK part yet", self)
        self.empty.setObjectName("Caption")
        self.row.addWidget(self.empty)
        self.row.addStretch(1)

    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self._theme = theme
        for t in self.thumbs:
            t.set_theme(theme)

    def add(self, result: InspectionResult) -> None:
        """Put a NOK part first; the oldest goes when the strip is full or out of room."""
        self.results.appendleft(reduced(result))
        self.empty.hide()
        self._sync()

    def set_preferred_height(self, h: int) -> None:
        """The height to take when the window has room for it."""
        if h != self.preferred_height:
            self.preferred_height = h
            self.updateGeometry()

    def sizeHint(self) -> QSize:
        return QSize(400, self.preferred_height)

    def minimumSizeHint(self) -> QSize:
        return QSize(0, 112)

    def _thumb_size(self) -> QSize:
        h = max(96, self.height() - 14)
        return QSize(int(h * THUMB_ASPECT), h)

    def _sync(self) -> None:
        """One thumbnail for each of the newest results that fit; reuse the existing ones."""
        size = self._thumb_size()
        room = max(1, int((self.width() - self.caption.width() - 30) // (size.width() + 8)))
        wanted = list(self.results)[:room]
        have = {id(t.result): t for t in self.thumbs}
        thumbs = []
        for r in wanted:
            t = have.pop(id(r), None)
            if t is None:
                t = Thumb(r, self._theme, self)
                t.clicked.connect(lambda _=False, r=r: self.opened.emit(r))
            if t.size() != size:
                t.setFixedSize(size)
            thumbs.append(t)
        for old in have.values():
            self.row.removeWidget(old)
            old.deleteLater()
        for i, t in enumerate(thumbs):
            if self.row.indexOf(t) != i:
                if self.row.indexOf(t) >= 0:
                    self.row.removeWidget(t)
                self.row.insertWidget(i, t)
            t.show()
        self.thumbs = thumbs

    def resizeEvent(self, event: object) -> None:
        if self.results:
            self._sync()


class NokDetail(QWidget):
    """One NOK part large: picture with overlay (zoomable), score, limit, time, part."""

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(20)
        self.view = ImageView(theme, self, interactive=False)
        lay.addWidget(self.view, 3)
        side = QVBoxLayout()
        side.setSpacing(10)
        # The part's facts; hidden while a reason is picked, which needs the height (the heading
        # still names the part and its score).
        self.facts = QWidget(self)
        grid = QGridLayout(self.facts)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setVerticalSpacing(2)
        grid.setHorizontalSpacing(12)
        grid.setColumnStretch(1, 1)
        self.values: dict[str, QLabel] = {}
        for i, (key, caption) in enumerate(
            (
                ("verdict", "Verdict"),
                ("score", "Score / limit"),
                ("time", "Time"),
                ("part", "Part"),
                ("model", "Model"),
            )
        ):
            cap = QLabel(caption, self.facts)
            cap.setObjectName("Caption")
            val = QLabel("-", self.facts)
            val.setObjectName("Stat")
            val.setWordWrap(True)
            # Caption beside its value: the disposition buttons below need the height.
            grid.addWidget(cap, i, 0)
            grid.addWidget(val, i, 1)
            self.values[key] = val
        side.addWidget(self.facts)
        self.dispose = DispositionPanel(self)
        self.dispose.steps.currentChanged.connect(lambda step: self.facts.setVisible(step == 0))
        side.addWidget(self.dispose)
        self.dispose_message = QLabel("", self)
        self.dispose_message.setObjectName("Caption")
        self.dispose_message.setWordWrap(True)
        side.addWidget(self.dispose_message)
        side.addStretch(1)
        self.overlay_button = QPushButton("Overlay ON", self)
        self.overlay_button.setCheckable(True)
        self.overlay_button.setChecked(True)
        self.overlay_button.toggled.connect(self._toggle_overlay)
        side.addWidget(self.overlay_button)
        lay.addLayout(side, 2)
        self.result: InspectionResult | None = None

    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self.view.set_theme(theme)

    def _toggle_overlay(self, on: bool) -> None:
        self.overlay_button.setText("Overlay ON" if on else "Overlay OFF")
        self.view.set_overlay_enabled(on)

    def show_result(self, result: InspectionResult, opacity: float) -> None:
        """Fill the view with `result`."""
        self.result = result
        self.view.set_opacity(opacity)
        self.view.show_still(result)
        v = self.values
        v["verdict"].setText(result.verdict.value)
        check = f" (check from {result.check_threshold:.2f})" if result.check_threshold else ""
        v["score"].setText(f"{result.score:.2f} / {result.threshold:.2f}{check}")
        v["time"].setText(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.timestamp)))
        part = result.part_id or f"#{result.frame_id}"
        if result.label:
            part += f" ({result.label})"
        v["part"].setText(part)
        v["model"].setText(result.model_version or "-")
