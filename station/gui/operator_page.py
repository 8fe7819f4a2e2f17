"""The operator's page (home): verdict banner, live image, counters, trend, drift, NOK strip.

The shell's display timer calls `update_display()`: it takes `app.latest()` and `app.status()`
(both cheap snapshots), drains the bridge, and redraws only what changed. Results that arrive
between two ticks are never queued for drawing: the screen always jumps to the newest part, so a
slow repaint costs skipped pictures, never a growing backlog or a slower line. Inference and
disk work never run here; every action (pause, close) goes to the app with the shell's session.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from station.app.access import Session
from station.config import StationConfig
from station.core.result import InspectionResult, LineStatus, StationEvent, StationState
from station.gui.bridge import LineBridge, ScorePoint
from station.gui.counters import CountersPanel
from station.gui.drift_panel import DriftLight, DriftPanel
from station.gui.image_view import ImageView
from station.gui.nok_strip import NokDetail, NokStrip
from station.gui.sheets import Sheet
from station.gui.status_bar import StatusBar
from station.gui.theme import Theme
from station.gui.verdict_banner import BannerState, VerdictBanner, banner_state

if TYPE_CHECKING:
    from station.app import StationApp

log = logging.getLogger(__name__)

OPACITY_STEP = 0.15
SECONDARY_MAX_WAIT_S = 0.5
# When the line is not inspecting, the picture shown is an old part: say so on it.
STALE_PICTURE = {
    StationState.PAUSED: "Paused: this is the last part inspected",
    StationState.CAMERA_LOST: "Camera lost: this is the last part before the loss",
    StationState.STOPPING: "Stopping: this is the last part inspected",
    StationState.STOPPED: "Stopped: this is the last part inspected",
    StationState.FAILED: "Stopped on an error: this is the last part inspected",
}
# Events the operator must see now; "state", "model" and "threshold" changes show in the banner
# and status bar already, and are in the events table for the technician.
NOTICE_KINDS = ("error", "camera", "storage", "drift")


class Shell(Protocol):
    """What a page uses of the window around it."""

    theme: Theme
    stopping: bool
    session: Session

    def overlay_parent(self) -> QWidget:
        """The widget that sheets cover (the whole window)."""
        ...

    def report_error(self, message: str, *, record: bool = True) -> None:
        """Tell the person on the notice bar (and record it)."""
        ...

    def notice(self, message: str) -> None:
        """Show a message on the notice bar."""
        ...

    def act(self, what: str, action: Any) -> bool:
        """Run `action(session)` as the current user; on a refusal say why and offer a login."""
        ...

    def toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""

    def request_close(self) -> None:
        """Ask whether to stop the line and close."""


class OperatorPage(QWidget):
    """The operator screen around the app's line."""

    def __init__(self, app: StationApp, cfg: StationConfig, shell: Shell) -> None:
        super().__init__()
        self.app = app
        self.cfg = cfg
        self.shell = shell
        self.theme = shell.theme
        self.bridge = LineBridge(app, self)
        self.status: LineStatus | None = None
        self.shown: InspectionResult | None = None
        self.shown_count = 0  # results drawn, for the bench: the rest were skipped
        self._last_clock = 0
        self._last_secondary = 0.0
        self._build()
        self.bridge.scores_arrived.connect(self._on_scores)
        self.bridge.nok_arrived.connect(self.nok_strip.add)
        self.bridge.event_arrived.connect(self._on_event)

    # -- construction -----------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(8)

        self.banner = VerdictBanner(self.theme, self)
        outer.addWidget(self.banner)

        middle = QHBoxLayout()
        middle.setSpacing(8)
        outer.addLayout(middle, 1)

        # Left: the image and its overlay controls.
        image_col = QVBoxLayout()
        image_col.setSpacing(6)
        self.image = ImageView(self.theme, self, opacity=self.cfg.gui.overlay_opacity)
        image_col.addWidget(self.image, 1)
        controls = QHBoxLayout()
        controls.setSpacing(8)
        self.overlay_button = QPushButton("Overlay ON", self)
        self.overlay_button.setCheckable(True)
        self.overlay_button.setChecked(True)
        self.overlay_button.toggled.connect(self.set_overlay_enabled)
        self.overlay_button.setMinimumWidth(150)
        controls.addWidget(self.overlay_button)
        self.less_button = QPushButton("\u2212", self)  # minus sign: wider than a hyphen
        self.less_button.clicked.connect(lambda: self.step_opacity(-OPACITY_STEP))
        controls.addWidget(self.less_button)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setPageStep(15)
        self.opacity_slider.setValue(round(100 * self.cfg.gui.overlay_opacity))
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100.0))
        controls.addWidget(self.opacity_slider, 1)
        self.more_button = QPushButton("+", self)
        self.more_button.clicked.connect(lambda: self.step_opacity(OPACITY_STEP))
        controls.addWidget(self.more_button)
        self.opacity_label = QLabel("", self)
        self.opacity_label.setObjectName("Stat")
        self.opacity_label.setMinimumWidth(76)
        controls.addWidget(self.opacity_label)
        image_col.addLayout(controls)
        middle.addLayout(image_col, 1)

        # Right: counters, trend, actions.
        right = QVBoxLayout()
        right.setSpacing(8)
        self.counters = CountersPanel(self)
        right.addWidget(self.counters)
        from station.gui.trend import TrendPlot  # pyqtgraph is imported with the first plot

        self.trend = TrendPlot(self.theme, self)
        right.addWidget(self.trend, 1)
        actions = QHBoxLayout()
        actions.setSpacing(8)
        self.drift_light = DriftLight(self.theme, self)
        self.drift_light.clicked.connect(self.open_drift)
        actions.addWidget(self.drift_light)
        self.pause_button = QPushButton("Pause", self)
        self.pause_button.clicked.connect(self.toggle_pause)
        actions.addWidget(self.pause_button, 1)
        self.theme_button = QPushButton("", self)
        self.theme_button.clicked.connect(self.shell.toggle_theme)
        actions.addWidget(self.theme_button, 1)
        # Not red: a red block on the screen must only ever mean a NOK part.
        self.exit_button = QPushButton("Exit", self)
        self.exit_button.clicked.connect(self.shell.request_close)
        actions.addWidget(self.exit_button, 1)
        for b in (self.pause_button, self.theme_button, self.exit_button):
            b.setMinimumHeight(72)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        right.addLayout(actions)
        middle.addLayout(right, 1)

        self.nok_strip = NokStrip(self.theme, self)
        self.nok_strip.opened.connect(self.open_nok)
        outer.addWidget(self.nok_strip)

        self.status_bar = StatusBar(self)
        self.status_bar.setFixedHeight(48)
        outer.addWidget(self.status_bar)

        over = self.shell.overlay_parent()
        self.drift_panel = DriftPanel(
            self.theme, window=self.cfg.drift.window, min_samples=self.cfg.drift.min_samples
        )
        self.drift_sheet = Sheet("Score drift", self.drift_panel, over)
        self.nok_detail = NokDetail(self.theme)
        self.nok_detail.dispose.chosen.connect(self._dispose)
        self.nok_sheet = Sheet("NOK part", self.nok_detail, over, margin=0.02)
        self._show_opacity()

    # -- theme and layout ---------------------------------------------------------------------
    def set_theme(self, theme: Theme) -> None:
        """Repaint the self-drawn widgets in `theme` (the style sheet is the window's)."""
        self.theme = theme
        for w in (
            self.banner,
            self.image,
            self.trend,
            self.drift_light,
            self.drift_panel,
            self.nok_strip,
            self.nok_detail,
        ):
            w.set_theme(theme)
        self.theme_button.setText("Light" if theme.name == "dark" else "Dark")
        self.trend.redraw(force=True)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        # The banner takes a sixth of the window's height: ~130 px at 800, ~180 px at 1080.
        h = self.window().height()
        self.banner.set_preferred_height(max(110, int(h * 0.165)))
        self.nok_strip.set_preferred_height(min(140, max(116, int(h * 0.14))))

    # -- controls -------------------------------------------------------------------------------
    def set_overlay_enabled(self, on: bool) -> None:
        """Heat map and outline on or off."""
        if self.overlay_button.isChecked() != on:
            self.overlay_button.setChecked(on)  # re-enters through toggled
            return
        self.overlay_button.setText("Overlay ON" if on else "Overlay OFF")
        self.image.set_overlay_enabled(on)
        for w in (self.less_button, self.more_button, self.opacity_slider):
            w.setEnabled(on)

    def set_opacity(self, opacity: float) -> None:
        """Heat map opacity 0 .. 1."""
        opacity = min(1.0, max(0.0, opacity))
        if self.opacity_slider.value() != round(opacity * 100):
            self.opacity_slider.setValue(round(opacity * 100))  # re-enters through valueChanged
            return
        self.image.set_opacity(opacity)
        self._show_opacity()

    def step_opacity(self, delta: float) -> None:
        """Change the opacity by `delta` (the - and + buttons)."""
        self.set_opacity(self.image.opacity + delta)

    def _show_opacity(self) -> None:
        self.opacity_label.setText(f"{round(self.image.opacity * 100)} %")

    def toggle_pause(self) -> None:
        """Pause a running line, resume a paused one (as the logged-in user)."""
        st = self.status.state if self.status else None
        if st == StationState.PAUSED:
            self.shell.act("Resume", self.app.resume)
        else:
            self.shell.act("Pause", self.app.pause)

    def open_drift(self) -> None:
        """Open the drift panel with the latest statistics."""
        self.drift_panel.show_status(self.status.drift if self.status else None)
        self.drift_sheet.open()

    def open_nok(self, result: InspectionResult) -> None:
        """Open one NOK part large, with what can be said about it (confirmed, false reject,
        rework: any operator may; the app checks)."""
        self.nok_detail.show_result(result, self.image.opacity)
        self.nok_detail.dispose.offer(
            self.app.disposition_choices(self.shell.session, result.verdict)
            if result.part_id
            else (),
            "What happened to this part?" if result.part_id else "",
        )
        self.nok_detail.dispose_message.setText("")
        name = result.part_id or f"#{result.frame_id}"
        self.nok_sheet.heading.setText(
            f"{result.verdict.value} part {name}: score {result.score:.2f}"
        )
        self.nok_sheet.open()

    def _dispose(self, kind: str, reason: str) -> None:
        result = self.nok_detail.result
        if result is None or not result.part_id:
            return
        part = result.part_id
        if self.shell.act("Disposition", lambda s: self.app.dispose(s, part, kind, reason)):
            label = kind.replace("_", " ")
            self.nok_detail.dispose.show_recorded(f"Recorded: {label} - {reason}")

    def _on_event(self, event: StationEvent) -> None:
        if event.kind in NOTICE_KINDS:
            self.shell.notice(event.message)

    def _on_scores(self, points: list[ScorePoint]) -> None:
        self.trend.add_points(points)

    # -- one display update ---------------------------------------------------------------------
    def update_display(self) -> bool:
        """Newest result and status; redraw only what changed. True when something did."""
        status = self.app.status()
        result = self.app.latest()
        changed = False
        new_picture = result is not None and result is not self.shown
        # The essentials first: the picture and the verdict.
        if new_picture:
            self.shown = result
            self.shown_count += 1
            self.image.set_result(result)
            changed = True
        if status != self.status:
            changed |= self._show_status(status)
        if self.shell.stopping:
            state = BannerState("amber", "STOPPING", "Finishing the current part ...")
        else:
            state = banner_state(self.status, self.shown)
        changed |= self.banner.show_state(state)
        # Secondary work (trend redraw, a new NOK thumbnail) goes to updates without a new
        # picture, so no single update pays for everything; when pictures arrive on every tick
        # it still runs every SECONDARY_MAX_WAIT_S.
        # And one of them at a time: a waiting NOK thumbnail, or else the trend (which goes
        # first when it has waited SECONDARY_MAX_WAIT_S), so that the two never add up.
        now = time.monotonic()
        if not new_picture or now - self._last_secondary >= SECONDARY_MAX_WAIT_S:
            self._last_secondary = now
            trend_due = self.trend.waiting_s(now) >= SECONDARY_MAX_WAIT_S
            if self.bridge.pending_nok and not trend_due:
                changed |= self.bridge.poll(max_nok=1)
            else:
                changed |= self.bridge.poll(max_nok=0)
                changed |= self.trend.redraw(now)
        else:
            changed |= self.bridge.poll(max_nok=0)
        second = int(time.time())
        if second != self._last_clock:
            self._last_clock = second
            changed |= self.status_bar.tick_clock(second)
        return changed

    def _show_status(self, status: LineStatus) -> bool:
        """Show a new snapshot; True when something on screen changed."""
        old, self.status = self.status, status
        changed = self.counters.set_counters(
            status.counters, band=status.check_threshold is not None
        )
        changed |= self.status_bar.set_status(status)
        drift = status.drift
        # No level before the monitor has min_samples good parts: it grades nothing yet.
        ready = drift is not None and len(drift.recent) >= self.cfg.drift.min_samples
        changed |= self.drift_light.set_level(drift.level if drift is not None and ready else None)
        self.trend.set_threshold(status.threshold)
        if old is None or old.state != status.state:
            paused = status.state == StationState.PAUSED
            self.pause_button.setText("Resume" if paused else "Pause")
            self.image.set_stale(STALE_PICTURE.get(status.state))
            changed = True
        if self.drift_sheet.isVisible() and (old is None or old.drift != status.drift):
            self.drift_panel.show_status(status.drift)
            changed = True
        return changed

    def reset_stats(self) -> None:
        """Forget what was drawn (the bench's warm-up)."""
        self.shown_count = 0

    def close_bridge(self) -> None:
        """Stop listening to the line."""
        self.bridge.close()
