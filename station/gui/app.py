"""Start the operator GUI around a running line: `station run` (without --headless) lands here."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from PySide6.QtCore import QTimer, QtMsgType, qInstallMessageHandler
from PySide6.QtWidgets import QApplication

from station.config import StationConfig
from station.core.result import StationState

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
WINDOW_SIZE = (1280, 800)  # the smallest supported panel; windowed mode opens at this size
# Harmless platform chatter that would otherwise fill a service's journal on every resize.
_QUIET = ("propagateSizeHints",)


def _qt_message(mode: QtMsgType, context: Any, message: str) -> None:
    if any(q in message for q in _QUIET):
        return
    level = {
        QtMsgType.QtDebugMsg: logging.DEBUG,
        QtMsgType.QtInfoMsg: logging.INFO,
        QtMsgType.QtWarningMsg: logging.WARNING,
    }.get(mode, logging.ERROR)
    logging.getLogger("qt").log(level, "%s", message)


def application() -> QApplication:
    """The process's QApplication (created once), with Qt's messages routed to logging."""
    app = QApplication.instance()
    if app is None:
        qInstallMessageHandler(_qt_message)
        app = QApplication(sys.argv[:1])
        app.setApplicationName("station")
    assert isinstance(app, QApplication)
    return app


# What Qt's xcb plugin loads that the PySide6 wheels do not bundle: soname -> Debian package.
# Qt aborts the whole process when one is missing and names another; checking first lets the
# station say which. The installers' QT_XCB_PACKAGES (installers/common/lib.sh) is the same set.
X11_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
}


def missing_x11_libraries() -> dict[str, str]:
    """The libraries of X11_LIBRARIES this system cannot load (soname -> package)."""
    import ctypes

    missing = {}
    for soname, package in X11_LIBRARIES.items():
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing[soname] = package
    return missing


def display_problem() -> str | None:
    """Why no window can open here (Linux without a display and no QPA chosen, or X11 without
    the libraries Qt needs), else None."""
    if not sys.platform.startswith("linux"):
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not platform and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return (
            "no display (neither DISPLAY nor WAYLAND_DISPLAY is set): run `station run "
            "--headless`, or set QT_QPA_PLATFORM (e.g. eglfs on a kiosk panel, offscreen for a "
            "smoke test)"
        )
    # With WAYLAND_DISPLAY Qt may take its wayland plugin, which needs none of these.
    wayland = bool(os.environ.get("WAYLAND_DISPLAY"))
    x11 = platform == "xcb" or (not platform and bool(os.environ.get("DISPLAY")) and not wayland)
    missing = missing_x11_libraries() if x11 else {}
    if missing:
        return (
            f"the window needs system libraries that are not installed: {', '.join(missing)}; "
            f"on Debian or Ubuntu: sudo apt-get install {' '.join(sorted(set(missing.values())))}"
            " (installers/linux/install.sh does this), or run `station run --headless`"
        )
    return None


def run_gui(
    cfg: StationConfig, data_dir: Path, *, kiosk: bool = False, max_frames: int | None = None
) -> int:
    """Start the station and open its window; returns the exit code (0 = clean stop).

    `kiosk` shows it full screen. With `max_frames` the line stops by itself and the window
    closes after it (demos, smoke tests). SIGTERM / Ctrl-C stop the line without asking.
    """
    problem = display_problem()
    if problem is not None:
        print(f"station run: {problem}", file=sys.stderr)
        return 2
    from station.app import StationApp
    from station.gui.main_window import MainWindow

    station = StationApp(cfg, data_dir, max_frames=max_frames)
    station.start()  # DataDirInUse (another station on this directory): no window at all
    try:
        app = application()
        window = MainWindow(station, cfg, kiosk=kiosk, close_when_stopped=max_frames is not None)
    except BaseException:
        station.close()  # no window: the line must not run on without one
        raise
    previous_hook = sys.excepthook

    def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        # An uncaught error in a slot: the full traceback goes to the log, the operator gets one
        # readable line in the notice bar (and the events table), never a traceback dialog.
        log.error("uncaught: %s", "".join(traceback.format_exception(kind, exc, tb)))
        try:
            window.report_error(f"{kind.__name__}: {exc}")
        except Exception:
            log.exception("could not show the error")

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.info("%s received: stopping the line", name)
        window.confirm_close(f"{name} received")

    sys.excepthook = _hook
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    # Python runs signal handlers only between bytecodes; Qt's loop is C++, so wake it up.
    pulse = QTimer()
    pulse.timeout.connect(lambda: None)
    pulse.start(200)
    try:
        if kiosk:
            window.showFullScreen()
        else:
            window.resize(*WINDOW_SIZE)
            window.show()
        app.exec()
    finally:
        pulse.stop()
        sys.excepthook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler)
        clean = station.stop(STOP_TIMEOUT_S, reason="window closed")
    status = station.status()
    station.close()
    if status.state == StationState.FAILED:
        log.error("the line failed: %s", status.reason)
        return 1
    return 0 if clean else 1


run = run_gui  # the name `station run` looks up
