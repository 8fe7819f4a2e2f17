"""The operator's main screen: verdict banner, live image, counters, trend, drift, NOK strip.

One display timer (`cfg.gui.display_hz`) drives everything: it takes `line.latest()` and
`line.status()` (both cheap snapshots), drains the bridge, and redraws only what changed. Results
that arrive between two ticks are never queued for drawing: the screen always jumps to the newest
part, so a slow repaint costs skipped pictures, never a growing backlog or a slower line.
Inference and disk work never run here; closing stops the line from a helper thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from station.config import StationConfig
from station.core.result import InspectionResult, LineStatus, StationEvent, StationState
from station.gui.bridge import LineBridge, LineLike, ScorePoint
from station.gui.counters import CountersPanel
from station.gui.drift_panel import DriftLight, DriftPanel
from station.gui.image_view import ImageView
from station.gui.nok_strip import NokDetail, NokStrip
from station.gui.sheets import ConfirmClose, NoticeBar, Sheet
from station.gui.status_bar import StatusBar
from station.gui.theme import Theme, load_theme, other
from station.gui.verdict_banner import BannerState, VerdictBanner, banner_state

log = logging.getLogger(__name__)

OPACITY_STEP = 0.15
STOP_TIMEOUT_S = 15.0
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


class MainWindow(QMainWindow):
    """The operator screen around one running `Line`."""

    def __init__(
        self,
        line: LineLike,
        cfg: StationConfig,
        *,
        theme: str | None = None,
        kiosk: bool = False,
        close_when_stopped: bool = False,
    ) -> None:
        super().__init__()
        self.line = line
        self.cfg = cfg
        self.kiosk = kiosk
        # With --max-frames the line ends by itself; a demo or smoke run then closes the window.
        self.close_when_stopped = close_when_stopped
        self.theme: Theme = load_theme(theme or cfg.gui.theme)
        self.setWindowTitle("Inspection station")
        self.bridge = LineBridge(line, self)
        self.status: LineStatus | None = None
        self.shown: InspectionResult | None = None
        self.shown_count = 0  # results drawn, for the bench: the rest were skipped
        # GUI-thread milliseconds per display update (tick work + the repaint it caused).
        self.update_ms: deque[float] = deque(maxlen=200_000)
        # The same in CPU time of the GUI thread: on a loaded machine wall time also counts the
        # waits for a core (or the GIL), which the GUI's own work does not cause.
        self.update_cpu_ms: deque[float] = deque(maxlen=200_000)
        self.idle_tick_ms: deque[float] = deque(maxlen=200_000)
        self._open_update: tuple[float, float] | None = None
        self._last_clock = 0
        self._last_secondary = 0.0
        self._can_close = False
        self._stopper: threading.Thread | None = None
        self._build()
        self.apply_theme(self.theme.name)
        self.bridge.scores_arrived.connect(self._on_scores)
        self.bridge.nok_arrived.connect(self.nok_strip.add)
        self.bridge.event_arrived.connect(self._on_event)
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(max(10, round(1000.0 / max(1.0, cfg.gui.display_hz))))
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    # -- construction -----------------------------------------------------------------------------
    def _build(self) -> None:
        root = QWidget(self)
        root.setObjectName("Root")
        self.setCentralWidget(root)
        outer = QVBoxLayout(root)
        outer.setContentsMargins(8, 8, 8, 0)
        outer.setSpacing(8)

        self.banner = VerdictBanner(self.theme, root)
        outer.addWidget(self.banner)
        self.notice = NoticeBar(root)
        outer.addWidget(self.notice)

        middle = QHBoxLayout()
        middle.setSpacing(8)
        outer.addLayout(middle, 1)

        # Left: the image and its overlay controls.
        image_col = QVBoxLayout()
        image_col.setSpacing(6)
        self.image = ImageView(self.theme, root, opacity=self.cfg.gui.overlay_opacity)
        image_col.addWidget(self.image, 1)
        controls = QHBoxLayout()
        controls.setSpacing(8)
        self.overlay_button = QPushButton("Overlay ON", root)
        self.overlay_button.setCheckable(True)
        self.overlay_button.setChecked(True)
        self.overlay_button.toggled.connect(self.set_overlay_enabled)
        self.overlay_button.setMinimumWidth(190)
        controls.addWidget(self.overlay_button)
        self.less_button = QPushButton("\u2212", root)  # minus sign: wider than a hyphen
        self.less_button.clicked.connect(lambda: self.step_opacity(-OPACITY_STEP))
        controls.addWidget(self.less_button)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, root)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setPageStep(15)
        self.opacity_slider.setValue(round(100 * self.cfg.gui.overlay_opacity))
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100.0))
        controls.addWidget(self.opacity_slider, 1)
        self.more_button = QPushButton("+", root)
        self.more_button.clicked.connect(lambda: self.step_opacity(OPACITY_STEP))
        controls.addWidget(self.more_button)
        self.opacity_label = QLabel("", root)
        self.opacity_label.setObjectName("Stat")
        self.opacity_label.setMinimumWidth(90)
        controls.addWidget(self.opacity_label)
        image_col.addLayout(controls)
        middle.addLayout(image_col, 1)

        # Right: counters, trend, actions.
        right = QVBoxLayout()
        right.setSpacing(8)
        self.counters = CountersPanel(root)
        right.addWidget(self.counters)
        from station.gui.trend import TrendPlot  # pyqtgraph is imported with the first plot

        self.trend = TrendPlot(self.theme, root)
        right.addWidget(self.trend, 1)
        actions = QHBoxLayout()
        actions.setSpacing(8)
        self.drift_light = DriftLight(self.theme, root)
        self.drift_light.clicked.connect(self.open_drift)
        actions.addWidget(self.drift_light)
        self.pause_button = QPushButton("Pause", root)
        self.pause_button.clicked.connect(self.toggle_pause)
        actions.addWidget(self.pause_button, 1)
        self.theme_button = QPushButton("", root)
        self.theme_button.clicked.connect(lambda: self.apply_theme(other(self.theme.name)))
        actions.addWidget(self.theme_button, 1)
        # Not red: a red block on the screen must only ever mean a NOK part.
        self.exit_button = QPushButton("Exit", root)
        self.exit_button.clicked.connect(self.request_close)
        actions.addWidget(self.exit_button, 1)
        for b in (self.pause_button, self.theme_button, self.exit_button):
            b.setMinimumHeight(72)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        right.addLayout(actions)
        middle.addLayout(right, 1)

        self.nok_strip = NokStrip(self.theme, root)
        self.nok_strip.opened.connect(self.open_nok)
        outer.addWidget(self.nok_strip)

        self.status_bar = StatusBar(root)
        self.status_bar.setFixedHeight(48)
        outer.addWidget(self.status_bar)

        self.drift_panel = DriftPanel(
            self.theme, window=self.cfg.drift.window, min_samples=self.cfg.drift.min_samples
        )
        self.drift_sheet = Sheet("Score drift", self.drift_panel, root)
        self.nok_detail = NokDetail(self.theme)
        self.nok_sheet = Sheet("NOK part", self.nok_detail, root, margin=0.02)
        self.confirm = ConfirmClose()
        self.confirm_sheet = Sheet("Stop inspection and close?", self.confirm, root, fill=False)
        self.confirm.keep_button.clicked.connect(self.confirm_sheet.dismiss)
        self.confirm.stop_button.clicked.connect(lambda: self.confirm_close())
        self.confirm_sheet.close_button.hide()  # two explicit choices, no third way out
        self._show_opacity()

    # -- theme and layout ---------------------------------------------------------------------
    def apply_theme(self, name: str) -> None:
        """Switch to the 'dark' or 'light' theme."""
        self.theme = load_theme(name)
        self.setStyleSheet(self.theme.qss)
        for w in (
            self.banner,
            self.image,
            self.trend,
            self.drift_light,
            self.drift_panel,
            self.nok_strip,
            self.nok_detail,
        ):
            w.set_theme(self.theme)
        self.theme_button.setText("Light" if name == "dark" else "Dark")
        self.trend.redraw(force=True)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        # The banner takes a sixth of the height: ~130 px at 800, ~180 px at 1080.
        h = self.height()
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
        """Pause a running line, resume a paused one."""
        st = self.status.state if self.status else None
        try:
            if st == StationState.PAUSED:
                self.line.resume()
            else:
                self.line.pause()
        except Exception as exc:  # shown to the operator, not as a traceback
            self.report_error(f"Pause/resume failed: {exc}")

    def open_drift(self) -> None:
        """Open the drift panel with the latest statistics."""
        self.drift_panel.show_status(self.status.drift if self.status else None)
        self.drift_sheet.open()

    def open_nok(self, result: InspectionResult) -> None:
        """Open one NOK part large."""
        self.nok_detail.show_result(result, self.image.opacity)
        self.nok_sheet.heading.setText(f"NOK part {result.frame_id}: score {result.score:.2f}")
        self.nok_sheet.open()

    # -- errors -----------------------------------------------------------------------------------
    def report_error(self, message: str, *, record: bool = True) -> None:
        """Tell the operator in the notice bar, log it, and record it as an 'error' event."""
        log.error("%s", message)
        self.notice.post(message)
        if not record:
            return
        recorder = getattr(self.line, "recorder", None)
        try:
            if recorder is not None:
                recorder.submit_event(StationEvent("error", f"GUI: {message}"))
        except Exception:
            log.exception("could not record the GUI error")

    def _on_event(self, event: StationEvent) -> None:
        if event.kind in NOTICE_KINDS:
            self.notice.post(event.message)

    def _on_scores(self, points: list[ScorePoint]) -> None:
        self.trend.add_points(points)

    # -- the display timer ----------------------------------------------------------------------
    def tick(self) -> None:
        """One display update: newest result and status; redraw only what changed."""
        t0, c0 = time.perf_counter(), time.thread_time()
        changed = False
        try:
            changed = self._update()
        except Exception as exc:
            # A drawing bug must not kill the screen or spam: one notice per distinct message.
            log.exception("display update failed")
            msg = f"Display error: {exc}"
            if not self.notice.messages or self.notice.messages[-1][1] != msg:
                self.report_error(msg)
        ms = (time.perf_counter() - t0) * 1e3
        cpu = (time.thread_time() - c0) * 1e3
        if changed:
            if self._open_update is not None:  # the previous update never got painted
                self.update_ms.append(self._open_update[0])
                self.update_cpu_ms.append(self._open_update[1])
            self._open_update = (ms, cpu)
        else:
            self.idle_tick_ms.append(ms)

    def _update(self) -> bool:
        status = self.line.status()
        result = self.line.latest()
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
        if self._stopper is not None:
            state = BannerState("amber", "STOPPING", "Finishing the current part ...")
        else:
            state = banner_state(self.status, self.shown)
        changed |= self.banner.show_state(state)
        # Secondary work (trend redraw, a new NOK thumbnail) goes to updates without a new
        # picture, so no single update pays for everything; when pictures arrive on every tick
        # it still runs every SECONDARY_MAX_WAIT_S.
        now = time.monotonic()
        if not new_picture or now - self._last_secondary >= SECONDARY_MAX_WAIT_S:
            self._last_secondary = now
            changed |= self.bridge.poll(max_nok=1)
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
        changed = self.counters.set_counters(status.counters)
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
        if (
            self.close_when_stopped
            and status.state in (StationState.STOPPED, StationState.FAILED)
            and self._stopper is None
            and not self._can_close
        ):
            self._can_close = True
            QTimer.singleShot(1500, self.close)
        return changed

    def event(self, event: QEvent) -> bool:
        # Every repaint of the window's widgets happens inside the top-level UpdateRequest:
        # timing it gives the paint half of a display update's GUI-thread cost.
        if event.type() != QEvent.Type.UpdateRequest:
            return super().event(event)
        t0, c0 = time.perf_counter(), time.thread_time()
        handled = super().event(event)
        if self._open_update is not None:
            ms, cpu = self._open_update
            self.update_ms.append(ms + (time.perf_counter() - t0) * 1e3)
            self.update_cpu_ms.append(cpu + (time.thread_time() - c0) * 1e3)
            self._open_update = None
        return handled

    def reset_stats(self) -> None:
        """Forget the update timings (the bench's warm-up)."""
        self.update_ms.clear()
        self.update_cpu_ms.clear()
        self.idle_tick_ms.clear()
        self._open_update = None
        self.shown_count = 0

    # -- closing --------------------------------------------------------------------------------
    def request_close(self) -> None:
        """Ask the operator to confirm (a large in-window panel, not a small dialog)."""
        if self._stopper is None:
            self.confirm_sheet.open()

    def confirm_close(self, reason: str = "closed by the operator") -> None:
        """Stop the line (in a helper thread, the screen keeps drawing) and close when done."""
        self.confirm_sheet.dismiss()
        if self._stopper is not None:
            return
        self._stopper = threading.Thread(
            target=self._stop_line, args=(reason,), name="gui-stop", daemon=True
        )
        self._stopper.start()
        self._wait_stopped()

    def _stop_line(self, reason: str) -> None:
        try:
            self.line.stop(STOP_TIMEOUT_S, reason=reason)
        except Exception:
            log.exception("stopping the line failed")

    def _wait_stopped(self) -> None:
        if self._stopper is not None and self._stopper.is_alive():
            QTimer.singleShot(50, self._wait_stopped)
            return
        self._can_close = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._can_close:
            event.ignore()
            self.request_close()
            return
        self.timer.stop()
        self.bridge.close()
        event.accept()
