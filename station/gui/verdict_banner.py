"""The verdict banner: OK in green, NOK in red, CHECK (send to a manual check) in purple, every
non-verdict state in amber with its reason.

Painted by hand rather than with labels: the title is fitted to the banner's width (never
truncated, as large as the height allows), and a state change costs one repaint of one widget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from station.core.result import InspectionResult, LineStatus, StationState, Verdict
from station.gui.theme import Theme

DISK_FULL_MB = 50.0  # below this much free space nothing can be recorded reliably


@dataclass(frozen=True)
class BannerState:
    """What the banner shows: kind is 'ok', 'nok', 'check', 'amber' or 'idle'."""

    kind: str
    title: str
    detail: str


def _fmt_score(r: InspectionResult) -> str:
    check = f" / check {r.check_threshold:.2f}" if r.check_threshold is not None else ""
    return f"score {r.score:.2f}{check} / limit {r.threshold:.2f}"


def _part(r: InspectionResult) -> str:
    # The part id (DEMO-20261201-000123) is what a person quotes; frame ids skip and restart.
    name = r.part_id or f"part {r.frame_id}"
    return f"{name} at {time.strftime('%H:%M:%S', time.localtime(r.timestamp))}"


def disk_full_reason(status: LineStatus) -> str | None:
    """The disk-full message when records cannot be written for lack of space, else None."""
    for alarm in status.alarms:
        if alarm.lower().startswith("disk full"):
            return alarm
    if status.disk_free_mb is not None and status.disk_free_mb < DISK_FULL_MB:
        return f"disk full: {status.disk_free_mb:.0f} MB free"
    return None


def banner_state(status: LineStatus | None, result: InspectionResult | None) -> BannerState:
    """Decide the banner from the line's snapshot and the newest result (pure, testable)."""
    if status is None:
        return BannerState("amber", "STARTING", "Opening camera and model ...")
    st = status.state
    reason = status.reason.strip()
    if st == StationState.MODEL_MISSING:
        return BannerState(
            "amber", "NO MODEL", reason or "No model for this product: a technician must fit one"
        )
    if st == StationState.CAMERA_LOST:
        # The title says "camera lost" already; the detail keeps only what was lost and why.
        why = reason.removeprefix("camera lost:").strip()
        return BannerState("amber", "CAMERA LOST", f"Reconnecting ... {why}".strip())
    if st == StationState.PAUSED:
        return BannerState("amber", "PAUSED", reason or "Inspection paused: tap Resume to go on")
    if st == StationState.FAILED:
        return BannerState("amber", "STOPPED: ERROR", reason or "The line stopped on an error")
    if st in (StationState.STARTING, StationState.STOPPING, StationState.STOPPED):
        default = {
            StationState.STARTING: "Opening camera and model ...",
            StationState.STOPPING: "Finishing the current part ...",
            StationState.STOPPED: "Inspection is not running",
        }[st]
        return BannerState("amber", st.value.upper(), reason or default)
    full = disk_full_reason(status)
    if full is not None:
        last = f"  |  last part {result.verdict.value}, {_fmt_score(result)}" if result else ""
        return BannerState("amber", "DISK FULL", f"Results not recorded ({full}){last}")
    if result is None:
        return BannerState("idle", "WAITING FOR PARTS", "The camera has not delivered a part yet")
    detail = f"{_fmt_score(result)}  |  {_part(result)}"
    if result.verdict == Verdict.NOK:
        return BannerState("nok", "NOK", detail)
    if result.verdict == Verdict.CHECK:
        return BannerState("check", "CHECK", f"manual check  |  {detail}")
    return BannerState("ok", "OK", detail)


# Symbols double the colour for colour-blind operators and glare: a tick, a cross, a warning.
_SYMBOL = {"ok": "\u2714 ", "nok": "\u2718 ", "check": "\u2691 ", "amber": "\u26a0 ", "idle": ""}


class VerdictBanner(QWidget):
    """Full-width banner; `show_state()` repaints only when the state text or colour changed."""

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("VerdictBanner")
        # Preferred, not Fixed: the banner asks for `preferred_height` but may give some back, so
        # that a window made smaller (1920x1080 -> 1280x800) is never held at the old height.
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMinimumHeight(110)
        self.preferred_height = 130
        self._theme = theme
        self.state = BannerState("amber", "STARTING", "")
        # Fitted title fonts by (title, width, height): the banner flips between a few titles
        # (OK, NOK, CHECK) and fitting one measures the text at several sizes.
        self._title_fonts: dict[tuple[str, int, int], QFont] = {}

    def set_theme(self, theme: Theme) -> None:
        """Use the colours of `theme`."""
        self._theme = theme
        self.update()

    def set_preferred_height(self, h: int) -> None:
        """The height to take when the window has room for it."""
        if h != self.preferred_height:
            self.preferred_height = h
            self.updateGeometry()

    def sizeHint(self) -> QSize:
        return QSize(800, self.preferred_height)

    def show_state(self, state: BannerState) -> bool:
        """Show `state`; False (and no repaint) when it is what is shown already."""
        if state == self.state:
            return False
        self.state = state
        self.update()
        return True

    def resizeEvent(self, event: object) -> None:
        self._title_fonts.clear()

    def colors(self) -> tuple[QColor, QColor]:
        """(background, text) for the current state."""
        t = self._theme
        kind = self.state.kind
        if kind == "ok":
            return QColor(t.color("ok")), QColor(t.color("on_verdict"))
        if kind == "nok":
            return QColor(t.color("nok")), QColor(t.color("on_verdict"))
        if kind == "check":
            return QColor(t.color("check")), QColor(t.color("on_verdict"))
        if kind == "amber":
            return QColor(t.color("amber")), QColor(t.color("amber_text"))
        return QColor(t.color("panel2")), QColor(t.color("text"))

    def _fit_title(self, text: str, rect: QRectF) -> QFont:
        font = QFont(self.font())
        font.setBold(True)
        size = max(12.0, rect.height())
        font.setPixelSize(int(size))
        # Shrink until the title fits the width: long amber titles must not be cut off.
        while size > 12:
            width = QFontMetricsF(font).horizontalAdvance(text)
            if width <= rect.width():
                break
            size *= max(0.5, min(0.95, rect.width() / width))
            font.setPixelSize(int(size))
        return font

    def paintEvent(self, event: QPaintEvent) -> None:
        bg, fg = self.colors()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        r = QRectF(self.rect())
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(bg)
        p.drawRoundedRect(r, 12, 12)
        pad = r.height() * 0.06
        inner = r.adjusted(pad * 3, pad, -pad * 3, -pad)
        detail_font = QFont(self.font())
        detail_font.setPixelSize(max(24, int(r.height() * 0.17)))
        fm = QFontMetricsF(detail_font)
        detail = self.state.detail
        lines = 0
        if detail:
            # A reason may be long (a path, an error): two lines, elided in the middle so that
            # both its start and its end stay readable, never cut at the banner's edge.
            lines = 1 if fm.horizontalAdvance(detail) <= inner.width() else 2
            if lines == 2:
                detail = fm.elidedText(detail, Qt.TextElideMode.ElideMiddle, inner.width() * 1.85)
        detail_h = lines * fm.lineSpacing()
        title_rect = QRectF(inner.left(), inner.top(), inner.width(), inner.height() - detail_h)
        title = _SYMBOL.get(self.state.kind, "") + self.state.title
        key = (title, int(title_rect.width()), int(title_rect.height()))
        font = self._title_fonts.get(key)
        if font is None:
            if len(self._title_fonts) >= 32:  # amber titles vary: keep the cache small
                self._title_fonts.clear()
            font = self._title_fonts[key] = self._fit_title(title, title_rect)
        p.setPen(fg)
        p.setFont(font)
        p.drawText(title_rect, Qt.AlignmentFlag.AlignCenter, title)
        if lines:
            detail_rect = QRectF(inner.left(), inner.bottom() - detail_h, inner.width(), detail_h)
            p.setFont(detail_font)
            flags = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop
            p.drawText(detail_rect, int(flags) | int(Qt.TextFlag.TextWordWrap), detail)
        p.end()
