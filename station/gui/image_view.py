"""The live image with the anomaly overlay; tap to freeze and zoom, drag to pan.

The picture is composed (numpy/cv2, `station.core.overlay`) only when something it depends on
changed - the result, the size, the overlay switch, the opacity, the zoom - and at the size it is
shown, so an unchanged frame costs a blit.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QResizeEvent,
)
from PySide6.QtWidgets import QPushButton, QSizePolicy, QWidget

from station.core.overlay import View, compose
from station.core.result import InspectionResult, Verdict
from station.gui.theme import Theme

TAP_SLOP_PX = 24  # a gloved finger moves a little during a tap; more than this is a drag
ZOOM_STEPS = (2.0, 4.0)  # first tap freezes at 2x, the next zooms to 4x, the next back to 2x


def to_qimage(rgb: np.ndarray) -> QImage:
    """Wrap a C-contiguous HxWx3 uint8 array (the caller keeps the array alive)."""
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, int(rgb.strides[0]), QImage.Format.Format_RGB888)


class ImageView(QWidget):
    """Shows one result; live (follows `set_result`) or frozen (keeps one result, zoomable)."""

    frozen_changed = Signal(bool)

    def __init__(
        self,
        theme: Theme,
        parent: QWidget | None = None,
        *,
        opacity: float = 0.45,
        interactive: bool = True,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ImageView")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self._theme = theme
        self.result: InspectionResult | None = None
        self.overlay_enabled = True
        self.opacity = float(opacity)
        self.frozen = False
        self.view = View()
        self._interactive = interactive
        self._rgb: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._target = QRectF()
        self._dirty = True
        self._press: QPointF | None = None
        self._press_view = View()
        self._dragged = False
        self.stale: str | None = None  # why the picture is not live (camera lost, paused)
        self.live_button = QPushButton("Back to live", self)
        self.live_button.setObjectName("Primary")
        self.live_button.hide()
        self.live_button.clicked.connect(self.unfreeze)

    # -- state ----------------------------------------------------------------------------------
    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self._theme = theme
        self.update()

    def set_result(self, result: InspectionResult | None) -> bool:
        """Show `result` unless frozen; True when the picture will change."""
        if self.frozen or result is self.result:
            return False
        self.result = result
        self._invalidate()
        return True

    def show_still(self, result: InspectionResult) -> None:
        """Show one result for good (the NOK detail view): frozen, not zoomed."""
        self.result = result
        self.frozen = True
        self.view = View()
        self._invalidate()

    def set_stale(self, why: str | None) -> bool:
        """Veil the picture with `why` (e.g. the camera is lost); None when live again."""
        if why == self.stale:
            return False
        self.stale = why
        self.update()
        return True

    def set_overlay_enabled(self, on: bool) -> None:
        """Switch the heat map and outline on or off."""
        if on != self.overlay_enabled:
            self.overlay_enabled = on
            self._invalidate()

    def set_opacity(self, opacity: float) -> None:
        """Heat map opacity, 0 .. 1."""
        opacity = min(1.0, max(0.0, float(opacity)))
        if opacity != self.opacity:
            self.opacity = opacity
            self._invalidate()

    def freeze(self, at: QPointF | None = None, zoom: float = ZOOM_STEPS[0]) -> None:
        """Keep the current result and zoom `zoom`x around `at` (widget coordinates)."""
        if self.result is None:
            return
        cx, cy = self._to_image_fraction(at) if at is not None else (0.5, 0.5)
        self.view = View(zoom, cx, cy).clamped()
        if not self.frozen:
            self.frozen = True
            self.frozen_changed.emit(True)
        self._place_live_button()
        self.live_button.setVisible(self._interactive)
        self._invalidate()

    def unfreeze(self) -> None:
        """Follow the live results again, unzoomed."""
        self.view = View()
        self.live_button.hide()
        if self.frozen:
            self.frozen = False
            self.frozen_changed.emit(False)
        self._invalidate()

    def image_rgb(self) -> np.ndarray | None:
        """The picture as last composed (what is drawn), for tests and screenshots."""
        return self._rgb

    def _invalidate(self) -> None:
        self._dirty = True
        self.update()

    # -- geometry -------------------------------------------------------------------------------
    def _to_image_fraction(self, pos: QPointF) -> tuple[float, float]:
        """Widget position -> fraction of the full image, through the current zoom."""
        if self.result is None or self._target.isEmpty():
            return 0.5, 0.5
        fx = (pos.x() - self._target.left()) / self._target.width()
        fy = (pos.y() - self._target.top()) / self._target.height()
        fx, fy = min(max(fx, 0.0), 1.0), min(max(fy, 0.0), 1.0)
        v = self.view.clamped()
        return v.cx + (fx - 0.5) / v.zoom, v.cy + (fy - 0.5) / v.zoom

    def _place_live_button(self) -> None:
        self.live_button.adjustSize()
        b = self.live_button
        b.move(self.width() - b.width() - 12, 12)

    def resizeEvent(self, event: QResizeEvent) -> None:
        self._place_live_button()
        self._dirty = True

    # -- touch ----------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if not self._interactive or event.button() != Qt.MouseButton.LeftButton:
            return
        self._press = event.position()
        self._press_view = self.view
        self._dragged = False

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is None or not self.frozen or self._target.isEmpty():
            return
        d = event.position() - self._press
        if not self._dragged and abs(d.x()) + abs(d.y()) < TAP_SLOP_PX:
            return
        self._dragged = True
        v = self._press_view
        # Dragging moves the picture with the finger: the centre moves the other way.
        self.view = View(
            v.zoom,
            v.cx - d.x() / self._target.width() / v.zoom,
            v.cy - d.y() / self._target.height() / v.zoom,
        ).clamped()
        self._invalidate()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._press is None:
            return
        pos = event.position()
        tapped = not self._dragged
        self._press = None
        if not tapped:
            return
        if not self.frozen:
            self.freeze(pos, ZOOM_STEPS[0])
            return
        steps = list(ZOOM_STEPS)
        nxt = (
            steps[(steps.index(self.view.zoom) + 1) % len(steps)]
            if self.view.zoom in steps
            else steps[0]
        )
        self.freeze(pos, nxt)

    # -- painting -------------------------------------------------------------------------------
    def _compose(self) -> None:
        r = self.result
        if r is None or self.width() <= 0:
            self._rgb, self._qimage = None, None
        else:
            self._rgb = compose(
                r.image,
                r.anomaly_map,
                r.threshold,
                (self.width(), self.height()),
                opacity=self.opacity,
                show_overlay=self.overlay_enabled,
                view=self.view if self.frozen else None,
                mark_peak=r.verdict == Verdict.NOK,
            )
            self._qimage = to_qimage(self._rgb)
            h, w = self._rgb.shape[:2]
            self._target = QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
        self._dirty = False

    def paintEvent(self, event: QPaintEvent) -> None:
        if self._dirty:
            self._compose()
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(self._theme.color("plot_bg")))
        if self._qimage is None:
            p.setPen(QColor(self._theme.color("muted")))
            font = QFont(self.font())
            font.setPointSize(20)
            p.setFont(font)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No image yet")
            p.end()
            return
        p.drawImage(self._target.topLeft(), self._qimage)
        if self.stale and not (self.frozen and self._interactive):
            self._draw_stale(p, self.stale)
        if self.frozen and self._interactive:
            pen = QPen(QColor(self._theme.color("accent")))
            pen.setWidth(6)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QRectF(self.rect()).adjusted(3, 3, -3, -3))
            self._draw_caption(p)
        p.end()

    def _draw_stale(self, p: QPainter, why: str) -> None:
        """A dimmed picture with the reason: an old part must not pass for the current one."""
        p.fillRect(self._target, QColor(0, 0, 0, 140))
        font = QFont(self.font())
        font.setPointSize(18)
        font.setBold(True)
        p.setFont(font)
        fm = p.fontMetrics()
        box = QRectF(12, 12, self.width() - 24, fm.height() * 2 + 16)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 200))
        p.drawRoundedRect(box, 8, 8)
        p.setPen(QColor("#ffffff"))
        flags = int(Qt.AlignmentFlag.AlignCenter) | int(Qt.TextFlag.TextWordWrap)
        p.drawText(box.adjusted(8, 4, -8, -4), flags, why)

    def _draw_caption(self, p: QPainter) -> None:
        """What is frozen, in words: the banner goes on showing the live verdict meanwhile."""
        r = self.result
        if r is None:
            return
        lines = (
            f"FROZEN: part {r.part_id or r.frame_id}, {r.verdict.value} {r.score:.2f}, "
            f"zoom {self.view.zoom:g}x",
            "tap to zoom, drag to pan",
        )
        font = QFont(self.font())
        font.setPointSize(15)
        font.setBold(True)
        p.setFont(font)
        fm = p.fontMetrics()
        width = self.width() - 24
        text = "\n".join(
            fm.elidedText(line, Qt.TextElideMode.ElideRight, int(width - 16)) for line in lines
        )
        h = 2 * fm.lineSpacing() + 12
        box = QRectF(12, self.height() - h - 12, width, h)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 190))
        p.drawRoundedRect(box, 8, 8)
        p.setPen(QColor("#ffffff"))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
