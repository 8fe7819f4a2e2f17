"""Helpers for the GUI tests: run the Qt loop until something holds, drag with a held button, and
save a window in both themes and both screen sizes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication

SIZES = ((1280, 800), (1920, 1080))
THEMES = ("dark", "light")
WAIT_S = 40.0  # generous: the machine running the tests may be busy


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S, what: str = "") -> None:
    """Run the Qt event loop until `predicate()` holds (the display timer keeps ticking)."""
    app = QApplication.instance()
    assert app is not None
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        app.processEvents()
        time.sleep(0.01)


def settle(ms: int = 60) -> None:
    """Let layouts and repaints run."""
    app = QApplication.instance()
    assert app is not None
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)


def drag(widget: Any, start: QPoint, by: QPoint) -> None:
    """Press, move in steps with the button held, release (QTest cannot move a held button)."""
    from PySide6.QtCore import QEvent, QPointF
    from PySide6.QtGui import QMouseEvent

    def send(kind: QEvent.Type, pos: QPoint, buttons: Any) -> None:
        p = QPointF(pos)
        ev = QMouseEvent(
            kind,
            p,
            widget.mapToGlobal(p),
            Qt.MouseButton.LeftButton,
            buttons,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(widget, ev)

    held = Qt.MouseButton.LeftButton
    send(QEvent.Type.MouseButtonPress, start, held)
    for i in range(1, 6):
        send(QEvent.Type.MouseMove, start + by * (i / 5), held)
    send(QEvent.Type.MouseButtonRelease, start + by, Qt.MouseButton.NoButton)
    settle()


class Shooter:
    """Saves the window in both themes and both sizes with the display held still."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: list[Path] = []

    def __call__(self, window: Any, state: str) -> list[Path]:
        """Freeze the display, save `state` 4 times, restore theme, size and the timer."""
        theme0, size0 = window.theme.name, (window.width(), window.height())
        window.timer.stop()  # the picture must be the same in all four
        out = []
        try:
            for theme in THEMES:
                window.apply_theme(theme)
                for w, h in SIZES:
                    window.resize(w, h)
                    settle()
                    # Nothing may hold the window larger than the screen (text pushed off it).
                    assert (window.width(), window.height()) == (w, h), (state, theme)
                    path = self.folder / f"{state}-{theme}-{w}x{h}.png"
                    assert window.grab().save(str(path)), path
                    out.append(path)
        finally:
            window.apply_theme(theme0)
            window.resize(*size0)
            window.timer.start()
            settle()
        self.saved += out
        return out


def discard(window: Any) -> None:
    """Close a window and delete it now, while Qt is whole.

    A closed window left to the interpreter's last garbage collection is freed after parts of Qt
    are gone, and PySide6 aborts the run at exit ('none_dealloc') though every test passed.
    """
    from PySide6.QtCore import QCoreApplication, QEvent

    window.close()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
