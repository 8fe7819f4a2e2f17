"""In-window panels instead of dialogs: a full-window sheet (drift, NOK detail, confirm close)
and a non-modal notice bar for errors. Both are children of the main window, so they are as large
as the screen wants, follow the theme, and never block the event loop the way `exec()` does."""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

NOTICE_SECONDS = 30.0  # an error notice stays this long unless dismissed; it is in the log anyway


class Sheet(QFrame):
    """A dimmed backdrop over its parent with a large card: heading, Close button, content."""

    closed = Signal()

    def __init__(
        self,
        title: str,
        content: QWidget,
        parent: QWidget,
        *,
        margin: float = 0.05,
        fill: bool = True,
    ) -> None:
        """`fill`: the card takes the window less `margin`; else it is as tall as its content."""
        super().__init__(parent)
        self.setObjectName("Backdrop")
        self._margin = margin
        self._fill = fill
        self.card = QFrame(self)
        self.card.setObjectName("Sheet")
        lay = QVBoxLayout(self.card)
        lay.setContentsMargins(24, 16, 24, 24)
        lay.setSpacing(12)
        head = QHBoxLayout()
        self.heading = QLabel(title, self.card)
        self.heading.setObjectName("Heading")
        self.heading.setWordWrap(True)
        head.addWidget(self.heading, 1)
        self.close_button = QPushButton("Close", self.card)
        self.close_button.setStyleSheet("min-height: 72px; min-width: 180px;")
        self.close_button.clicked.connect(self.dismiss)
        head.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(head)
        self.content = content
        content.setParent(self.card)
        lay.addWidget(content, 1)
        parent.installEventFilter(self)
        self.hide()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.parent() and event.type() == QEvent.Type.Resize:
            self._fit()
        return False

    def _fit(self) -> None:
        parent = self.parentWidget()
        if parent is None:
            return
        self.setGeometry(parent.rect())
        m = int(min(parent.width(), parent.height()) * self._margin)
        w, h = parent.width() - 2 * m, parent.height() - 2 * m
        if not self._fill:
            w = min(w, max(720, int(parent.width() * 0.6)))
            h = min(h, self.card.sizeHint().height())
        self.card.setGeometry((parent.width() - w) // 2, (parent.height() - h) // 2, w, h)

    def open(self) -> None:
        """Show over everything else."""
        self._fit()
        self.show()
        self.raise_()

    def dismiss(self) -> None:
        """Hide and tell listeners."""
        if self.isVisible():
            self.hide()
            self.closed.emit()


class ConfirmClose(QWidget):
    """Content of the close sheet: two big, clearly different choices."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setSpacing(24)
        text = QLabel(
            "The line stops after the current part. Every inspected part is already recorded.",
            self,
        )
        text.setWordWrap(True)
        text.setObjectName("Stat")
        lay.addWidget(text)
        row = QHBoxLayout()
        row.setSpacing(32)
        self.keep_button = QPushButton("Keep running", self)
        self.keep_button.setObjectName("Primary")
        self.stop_button = QPushButton("Stop line and close", self)
        self.stop_button.setObjectName("Danger")
        for b in (self.keep_button, self.stop_button):
            # In the style sheet, not setMinimumSize: the theme's QPushButton min-height wins.
            b.setStyleSheet("min-height: 96px; min-width: 280px; font-size: 20pt;")
            row.addWidget(b, 1)
        lay.addLayout(row)


class NoticeBar(QFrame):
    """An amber bar with the latest error message and a Dismiss button; never modal."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("NoticeBar")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(16, 6, 8, 6)
        self.label = QLabel("", self)
        self.label.setObjectName("Notice")
        self.label.setWordWrap(True)
        lay.addWidget(self.label, 1)
        self.dismiss_button = QPushButton("Dismiss", self)
        self.dismiss_button.setMinimumWidth(160)
        self.dismiss_button.clicked.connect(self.dismiss)
        lay.addWidget(self.dismiss_button)
        self.messages: list[tuple[float, str]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)
        self.hide()

    def post(self, message: str) -> None:
        """Show `message` (the newest replaces the text; the count of unread ones is kept)."""
        self.messages.append((time.time(), message))
        unread = len(self.messages)
        more = f"   (+{unread - 1} earlier)" if unread > 1 else ""
        self.label.setText(f"{time.strftime('%H:%M:%S')}  {message}{more}")
        self.show()
        self._timer.start(int(NOTICE_SECONDS * 1000))

    def dismiss(self) -> None:
        """Hide and forget the shown messages."""
        self.messages.clear()
        self._timer.stop()
        self.hide()
