"""Small building blocks every page uses: big buttons, captions, values, cards."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout, QWidget

BUTTON_PX = 72  # a page's own buttons; Back / Next and the navigation are larger


def big_button(text: str, parent: QWidget, *, primary: bool = False, width: int = 0) -> QPushButton:
    b = QPushButton(text, parent)
    if primary:
        b.setObjectName("Primary")
    style = f"min-height: {BUTTON_PX}px;"
    if width:
        style += f" min-width: {width}px;"
    b.setStyleSheet(style)
    return b


def caption(text: str, parent: QWidget, *, wrap: bool = False) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("Caption")
    label.setWordWrap(wrap)
    return label


def stat(text: str, parent: QWidget, *, wrap: bool = True) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("Stat")
    label.setWordWrap(wrap)
    return label


def card(parent: QWidget) -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame(parent)
    frame.setObjectName("Card")
    lay = QVBoxLayout(frame)
    lay.setContentsMargins(16, 12, 16, 12)
    lay.setSpacing(8)
    return frame, lay
