"""The operator screen on the real line: replay camera, real model, real records (SQLite).

One line and one window serve the module's tests, in order (a shift seen through one screen):
verdicts, overlay, NOK detail, drift, counters vs records, camera loss, disk full, errors, close.
Every state is saved as PNG in both themes and both screen sizes (see `shoot`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QPoint, Qt
from screens import SIZES, Shooter, discard, drag, settle, wait_until  # tests/gui/screens.py

from station.app.quality import Disposition
from station.core.result import StationState, Verdict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def station(qapp: Any, make_data_dir: Any, gui_config: Any) -> Iterator[tuple[Any, Any, Path]]:
    """(app, window, data_dir): the real station on the replay camera with its window."""
    from station.app import StationApp
    from station.gui.main_window import MainWindow

    data = make_data_dir()
    cfg = gui_config(data)
    line = StationApp(cfg, data)
    line.start()
    window = MainWindow(line, cfg)
    window.resize(*SIZES[0])
    window.show()
    yield line, window, data
    window._can_close = True
    line.stop(30.0)
    discard(window)
    line.close()
    replay = data / "replay"
    if not replay.exists() and (data / "replay.gone").exists():
        (data / "replay.gone").rename(replay)


def test_banner_turns_nok_on_defect_and_ok_on_good(
    station: Any, shoot: Shooter, record_property: Any
) -> None:
    line, window, _ = station
    record_property("screenshots", str(shoot.folder))
    wait_until(lambda: line.status().state == StationState.RUNNING, what="the line running")

    def showing(verdict: Verdict, good: bool) -> bool:
        r = window.operator.shown
        return (
            r is not None
            and r.verdict == verdict
            and (r.label == "good") == good
            and window.operator.banner.state.kind == verdict.value.lower()
        )

    wait_until(lambda: showing(Verdict.NOK, good=False), what="NOK on a defective part")
    assert window.operator.banner.state.title == "NOK"
    assert f"{window.operator.shown.score:.2f}" in window.operator.banner.state.detail
    shoot(window, "01-nok")
    wait_until(lambda: showing(Verdict.OK, good=True), what="OK on a good part")
    assert window.operator.banner.state.title == "OK"
    # The verdict colours come from the theme: green for OK, red for NOK, white text on both.
    # Read before the screenshots: the line runs on meanwhile and the next part may be NOK.
    bg, fg = window.operator.banner.colors()
    assert bg.name() == window.theme.color("ok") and fg.name() == "#ffffff"
    shoot(window, "02-ok")


def test_touch_targets_and_readouts_are_large_enough(station: Any) -> None:
    """Every control at least 48 px both ways, the main readouts at least 18 pt, both sizes."""
    from PySide6.QtWidgets import QAbstractButton, QSlider

    from station.gui.counters import Readout

    _, window, _ = station
    try:
        for size in SIZES:
            window.resize(*size)
            settle()
            controls = [
                w
                for w in window.findChildren(QAbstractButton) + window.findChildren(QSlider)
                if w.isVisibleTo(window)
            ]
            assert len(controls) >= 8
            small = [
                (w.objectName() or type(w).__name__, w.text() if hasattr(w, "text") else "")
                for w in controls
                if min(w.width(), w.height()) < 48
            ]
            assert not small, f"{size}: controls under 48 px: {small}"
            readouts = window.findChildren(Readout)
            assert len(readouts) == 6 and all(r._min_points >= 18 for r in readouts)
            # The verdict: a banner title of at least 18 pt (24 px) - in practice far larger.
            banner = window.operator.banner
            assert banner.height() >= 110
            banner.repaint()  # fits the title for this size
            fonts = list(banner._title_fonts.values())
            assert fonts and min(f.pixelSize() for f in fonts) >= 24
    finally:
        window.resize(*SIZES[0])
        settle()


def test_overlay_toggle_and_opacity_change_the_drawn_image(
    station: Any, qtbot: Any, shoot: Shooter
) -> None:
    _, window, _ = station
    view = window.operator.image
    wait_until(
        lambda: view.result is not None and view.result.verdict == Verdict.NOK,
        what="a NOK part in the image view",
    )
    # Tap: freeze on this NOK part (2x zoom around the tap), the banner stays live.
    qtbot.mouseClick(
        view, Qt.MouseButton.LeftButton, pos=QPoint(view.width() // 2, view.height() // 2)
    )
    assert view.frozen and view.view.zoom == 2.0 and view.live_button.isVisible()
    frozen = view.result
    assert frozen is not None and frozen.anomaly_map is not None

    def drawn() -> np.ndarray:
        settle(80)
        img = view.grab().toImage()
        ptr = img.constBits()
        arr = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())
        return arr.copy()

    with_overlay = drawn()
    qtbot.mouseClick(window.operator.overlay_button, Qt.MouseButton.LeftButton)
    assert (
        not window.operator.overlay_button.isChecked()
        and window.operator.overlay_button.text() == "Overlay OFF"
    )
    without = drawn()
    assert np.mean(with_overlay != without) > 0.001, "overlay off did not change the image"
    qtbot.mouseClick(window.operator.overlay_button, Qt.MouseButton.LeftButton)
    assert drawn().tobytes() == with_overlay.tobytes()  # same frozen part, same picture
    for _ in range(3):
        qtbot.mouseClick(window.operator.more_button, Qt.MouseButton.LeftButton)
    assert view.opacity == pytest.approx(min(1.0, window.cfg.gui.overlay_opacity + 0.45))
    assert window.operator.opacity_label.text() == f"{round(view.opacity * 100)} %"
    stronger = drawn()
    assert np.mean(stronger != with_overlay) > 0.001, "opacity did not change the image"
    assert view.result is frozen  # still the same part: only the overlay changed
    # Drag with a finger: the picture moves with it (the view's centre the other way).
    before = view.view
    drag(view, QPoint(view.width() // 2, view.height() // 2), QPoint(-80, -60))
    assert view.frozen and view.result is frozen
    assert view.view.cx > before.cx and view.view.cy > before.cy, (before, view.view)
    shoot(window, "03-frozen-zoom-overlay")
    window.operator.set_opacity(window.cfg.gui.overlay_opacity)
    qtbot.mouseClick(view.live_button, Qt.MouseButton.LeftButton)
    assert not view.frozen
    wait_until(lambda: view.result is not frozen, what="the live picture again")


def test_nok_thumbnail_opens_the_detail_view(station: Any, qtbot: Any, shoot: Shooter) -> None:
    _, window, _ = station
    strip = window.operator.nok_strip
    wait_until(lambda: len(strip.thumbs) >= 2, what="two NOK thumbnails")
    thumb = strip.thumbs[0]
    assert thumb.width() >= 48 and thumb.height() >= 48  # a gloved finger's target
    qtbot.mouseClick(thumb, Qt.MouseButton.LeftButton)
    settle()
    assert window.operator.nok_sheet.isVisible()
    detail = window.operator.nok_detail
    r = thumb.result
    assert detail.result is r and r.verdict == Verdict.NOK
    assert detail.values["score"].text() == f"{r.score:.2f} / {r.threshold:.2f}"
    assert time.strftime("%H:%M:%S", time.localtime(r.timestamp)) in detail.values["time"].text()
    assert detail.view.image_rgb() is not None
    shoot(window, "04-nok-detail")
    panel = detail.dispose

    def unclipped(buttons: list[Any]) -> None:
        # Each target is whole on the screen: not cut off by the sheet, not under another.
        sheet = window.operator.nok_sheet
        rects = []
        for b in buttons:
            top_left = b.mapTo(sheet, QPoint(0, 0))
            rect = b.rect().translated(top_left)
            assert sheet.rect().contains(rect), (b.text(), rect, sheet.rect())
            assert b.visibleRegion().boundingRect().size() == b.size(), b.text()
            assert b.height() >= 60, (b.text(), b.height())
            assert not any(rect.intersects(r) for r in rects), (b.text(), rect, rects)
            rects.append(rect)

    unclipped([b for b in panel.kind_buttons.values() if b.isVisible()])
    qtbot.mouseClick(panel.kind_buttons[Disposition.FALSE_REJECT], Qt.MouseButton.LeftButton)
    settle()
    unclipped([*(b for b in panel.reason_buttons if b.isVisible()), panel.back_button])
    shoot(window, "04-nok-disposition-reason")
    qtbot.mouseClick(panel.back_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(window.operator.nok_sheet.close_button, Qt.MouseButton.LeftButton)
    assert not window.operator.nok_sheet.isVisible()


def test_drift_panel_opens_and_shows_the_statistics(
    station: Any, qtbot: Any, shoot: Shooter
) -> None:
    line, window, _ = station
    need = window.cfg.drift.min_samples
    wait_until(
        lambda: (d := line.status().drift) is not None and len(d.recent) >= need,
        what=f"{need} good parts for the drift monitor",
    )
    wait_until(lambda: window.operator.drift_light.level is not None, what="the drift light")
    qtbot.mouseClick(window.operator.drift_light, Qt.MouseButton.LeftButton)
    settle()
    assert window.operator.drift_sheet.isVisible()
    panel = window.operator.drift_panel
    shown = panel.status
    assert shown is not None and len(shown.recent) >= need
    assert panel.text("level") == shown.level.value.upper()
    assert panel.text("mean") == f"{shown.mean_shift_sd:+.2f} sd"
    assert panel.text("ks").startswith(f"{shown.ks_statistic:.3f}")
    assert panel.text("window") == f"{len(shown.recent)} of {window.cfg.drift.window}"
    # Both histograms are drawn: the baseline and the recent good parts.
    for curve in (panel.baseline_curve, panel.recent_curve):
        x, y = curve.getData()
        assert x is not None and len(x) > 1 and float(np.sum(y)) == pytest.approx(100.0)
    shoot(window, "05-drift-panel")
    qtbot.mouseClick(window.operator.drift_sheet.close_button, Qt.MouseButton.LeftButton)
    assert not window.operator.drift_sheet.isVisible()


def test_counters_match_the_records_in_sqlite(station: Any, qtbot: Any, shoot: Shooter) -> None:
    line, window, _ = station
    qtbot.mouseClick(window.operator.pause_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: window.operator.banner.state.title == "PAUSED", what="the paused banner")
    assert (
        window.operator.banner.state.kind == "amber"
        and window.operator.pause_button.text() == "Resume"
    )
    # Frames already queued are still inspected: wait until the count stands still.
    last = [-1, time.monotonic()]

    def still() -> bool:
        n = line.status().counters.inspected
        if n != last[0]:
            last[:] = [n, time.monotonic()]
        return time.monotonic() - last[1] > 1.0

    wait_until(still, what="the counters to stand still")
    assert line.recorder.flush(10.0)
    c = line.status().counters
    wait_until(
        lambda: window.operator.counters.text("inspected") == f"{c.inspected:,}", what="the GUI"
    )
    rows = line.recorder.query_inspections()
    nok_rows = [r for r in rows if r.verdict == Verdict.NOK]
    shifts = line.recorder.reader().all_shift_counts()
    text = window.operator.counters.text
    assert int(text("inspected").replace(",", "")) == len(rows) == sum(s.inspected for s in shifts)
    assert int(text("nok").replace(",", "")) == len(nok_rows) == sum(s.nok for s in shifts)
    assert text("nok_rate") == f"{100.0 * len(nok_rows) / len(rows):.1f} %"
    assert int(text("dropped").replace(",", "")) == sum(s.dropped for s in shifts)
    assert text("latency") == f"{c.latency_p50_ms:.0f} / {c.latency_p95_ms:.0f} ms"
    shoot(window, "06-paused")
    qtbot.mouseClick(window.operator.pause_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: line.status().state == StationState.RUNNING, what="running again")
    wait_until(lambda: window.operator.pause_button.text() == "Pause", what="the Pause button back")


def test_camera_loss_shows_amber_and_recovers(station: Any, shoot: Shooter) -> None:
    line, window, data = station
    replay = data / "replay"
    before = line.status().counters.inspected
    wait_until(lambda: line.status().counters.inspected > before, what="parts flowing")
    replay.rename(data / "replay.gone")  # the cable is pulled
    try:
        wait_until(
            lambda: window.operator.banner.state.title == "CAMERA LOST",
            what="the camera-lost banner",
        )
        assert window.operator.banner.state.kind == "amber"
        assert "Reconnecting" in window.operator.banner.state.detail
        assert "replay" in window.operator.banner.state.detail  # the reason, in words
        shoot(window, "07-camera-lost")
    finally:
        (data / "replay.gone").rename(replay)  # and plugged back in
    lost_at = line.status().counters.inspected
    wait_until(
        lambda: (
            line.status().state == StationState.RUNNING
            and line.status().counters.inspected > lost_at
        ),
        what="the line to reconnect and inspect again",
    )
    wait_until(
        lambda: window.operator.banner.state.kind in ("ok", "nok"), what="a verdict on the banner"
    )
    events = (
        [e.message for e in line.recorder.query_events(kind="state")]
        if line.recorder.flush()
        else []
    )
    assert any("camera lost" in m for m in events), events


def test_disk_full_is_amber_with_the_reason(station: Any, shoot: Shooter) -> None:
    """Disk full is shown from the status snapshot; here that snapshot is constructed (filling a
    real disk is not something a test should do): the line's own status with the recorder's
    disk-full alarm added."""
    line, window, _ = station

    class DiskFull:
        def __getattr__(self, name: str) -> Any:
            return getattr(line, name)

        def status(self) -> Any:
            return dataclasses.replace(
                line.status(), alarms=("disk full: 12 results not recorded",), disk_free_mb=3.0
            )

    window.operator.app = DiskFull()
    try:
        wait_until(
            lambda: window.operator.banner.state.title == "DISK FULL", what="the disk-full banner"
        )
        assert window.operator.banner.state.kind == "amber"
        assert "12 results not recorded" in window.operator.banner.state.detail
        assert window.operator.status_bar.text("disk") == "disk 3 MB free"
        shoot(window, "08-disk-full")
    finally:
        window.operator.app = line
    wait_until(lambda: window.operator.banner.state.kind in ("ok", "nok"), what="the verdict back")


def test_errors_reach_the_operator_and_are_recorded(
    station: Any, qtbot: Any, shoot: Shooter, monkeypatch: pytest.MonkeyPatch
) -> None:
    line, window, _ = station
    calls = [0]
    real = window.operator.banner.show_state

    def broken(state: Any) -> bool:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("banner font missing")
        return real(state)

    monkeypatch.setattr(window.operator.banner, "show_state", broken)
    wait_until(lambda: window.notice_bar.isVisible(), what="the notice bar")
    assert "Display error: banner font missing" in window.notice_bar.label.text()
    assert "Traceback" not in window.notice_bar.label.text()
    shoot(window, "09-error-notice")
    assert line.recorder.flush(10.0)
    errors = [e.message for e in line.recorder.query_events(kind="error")]
    assert "GUI: Display error: banner font missing" in errors
    qtbot.mouseClick(window.notice_bar.dismiss_button, Qt.MouseButton.LeftButton)
    assert not window.notice_bar.isVisible()


def test_close_asks_for_confirmation_and_stops_the_line(
    station: Any, qtbot: Any, shoot: Shooter
) -> None:
    line, window, _ = station
    window.close()
    settle()
    assert window.isVisible() and window.confirm_sheet.isVisible()
    assert line.status().state == StationState.RUNNING
    assert window.confirm.stop_button.height() >= 72 and window.confirm.keep_button.height() >= 72
    shoot(window, "10-confirm-close")
    window.confirm_sheet.open()
    qtbot.mouseClick(window.confirm.keep_button, Qt.MouseButton.LeftButton)
    assert not window.confirm_sheet.isVisible() and window.isVisible()
    window.request_close()
    qtbot.mouseClick(window.confirm.stop_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: not window.isVisible(), what="the window to close")
    assert line.status().state == StationState.STOPPED
    assert line.wait(0)


def test_no_model_shows_amber_with_the_reason(
    qapp: Any, make_data_dir: Any, gui_config: Any, shoot: Shooter
) -> None:
    from station.app import StationApp
    from station.gui.main_window import MainWindow

    data = make_data_dir(with_model=False)
    cfg = gui_config(data, product="bracket")  # not the demo product: nothing is built
    line = StationApp(cfg, data)
    line.start()
    window = MainWindow(line, cfg)
    window.resize(*SIZES[0])
    window.show()
    try:
        wait_until(
            lambda: window.operator.banner.state.title == "NO MODEL", what="the no-model banner"
        )
        assert window.operator.banner.state.kind == "amber"
        assert "bracket" in window.operator.banner.state.detail
        assert window.operator.status_bar.text("model").startswith("Model: none")
        shoot(window, "11-no-model")
    finally:
        window._can_close = True
        line.stop(30.0)
        discard(window)
        line.close()
