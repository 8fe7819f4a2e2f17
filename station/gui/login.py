"""The PIN login: pick a name (big buttons), type the PIN on a numeric keypad, OK.

The keys are at least 96 px square at 1280x800, for gloved fingers; the PIN shows as dots. The
check itself is the app's (`StationApp.login`): this panel only collects the digits and shows
the app's answer (wrong PIN with the tries left, or how long the user is locked).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

KEY_PX = 96
MAX_DIGITS = 12
FIRST_ADMIN_HINT = (
    "No users are defined yet, so the station runs operator-only. To create the first admin, run "
    "on the station PC:  station users add NAME --role admin"
)


class Keypad(QWidget):
    """Digits 1-9, 0, delete and OK, as a 3 x 4 grid of large keys."""

    digit = Signal(str)
    erase = Signal()
    submit = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setSpacing(12)
        self.keys: dict[str, QPushButton] = {}
        layout = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "\u232b", "0", "OK"]
        for i, label in enumerate(layout):
            b = QPushButton(label, self)
            b.setObjectName("Primary" if label == "OK" else "Key")
            b.setStyleSheet(f"min-height: {KEY_PX}px; min-width: {KEY_PX}px; font-size: 26pt;")
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            if label == "OK":
                b.clicked.connect(self.submit.emit)
            elif label == "\u232b":
                b.clicked.connect(self.erase.emit)
            else:
                b.clicked.connect(lambda _=False, d=label: self.digit.emit(d))
            grid.addWidget(b, i // 3, i % 3)
            self.keys[label] = b


class LoginPanel(QWidget):
    """Content of the login sheet; `attempt(name, pin)` returns an error text or None."""

    logged_in = Signal()

    def __init__(
        self, attempt: Callable[[str, str], str | None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._attempt = attempt
        self.pin = ""
        self.name: str | None = None
        outer = QVBoxLayout(self)
        outer.setSpacing(12)
        self.message = QLabel("", self)
        self.message.setObjectName("Stat")
        self.message.setWordWrap(True)
        outer.addWidget(self.message)
        row = QHBoxLayout()
        row.setSpacing(24)
        outer.addLayout(row, 1)

        names_col = QVBoxLayout()
        self.caption = QLabel("Who are you?", self)
        self.caption.setObjectName("Caption")
        names_col.addWidget(self.caption)
        self.names_area = QScrollArea(self)
        self.names_area.setWidgetResizable(True)
        self.names_box = QWidget()
        self.names_layout = QVBoxLayout(self.names_box)
        self.names_layout.setSpacing(10)
        self.names_layout.addStretch(1)
        self.names_area.setWidget(self.names_box)
        names_col.addWidget(self.names_area, 1)
        row.addLayout(names_col, 1)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.name_buttons: dict[str, QPushButton] = {}

        pin_col = QVBoxLayout()
        self.pin_label = QLabel("", self)
        self.pin_label.setObjectName("Heading")
        self.pin_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.pin_label.setMinimumHeight(64)
        pin_col.addWidget(self.pin_label)
        self.keypad = Keypad(self)
        self.keypad.digit.connect(self._digit)
        self.keypad.erase.connect(self._erase)
        self.keypad.submit.connect(self._submit)
        pin_col.addWidget(self.keypad, 1)
        row.addLayout(pin_col, 1)
        self._show_pin()

    def set_names(self, names: list[str], *, hint: str = "") -> None:
        """The users to choose from (the app's list), and a line of why a login is asked."""
        for b in self.name_buttons.values():
            self.group.removeButton(b)
            b.deleteLater()
        self.name_buttons = {}
        for n in names:
            b = QPushButton(n, self.names_box)
            b.setCheckable(True)
            b.setStyleSheet("min-height: 80px; font-size: 20pt;")
            b.clicked.connect(lambda _=False, name=n: self.choose(name))
            self.group.addButton(b)
            self.names_layout.insertWidget(self.names_layout.count() - 1, b)
            self.name_buttons[n] = b
        self.name = None
        self.pin = ""
        self._show_pin()
        if not names:
            self.message.setText(FIRST_ADMIN_HINT)
        else:
            self.message.setText(hint or "Choose your name, then enter your PIN.")
        # Nobody to log in as: only the way to make the first admin, no empty list and keypad.
        for w in (self.caption, self.names_area, self.pin_label, self.keypad):
            w.setVisible(bool(names))
        self.keypad.setEnabled(bool(names))

    def choose(self, name: str) -> None:
        """Select the user who logs in."""
        self.name = name
        b = self.name_buttons.get(name)
        if b is not None and not b.isChecked():
            b.setChecked(True)
        self.pin = ""
        self._show_pin()
        self.message.setText(f"{name}: enter your PIN, then OK.")

    def _digit(self, d: str) -> None:
        if len(self.pin) < MAX_DIGITS:
            self.pin += d
            self._show_pin()

    def _erase(self) -> None:
        self.pin = self.pin[:-1]
        self._show_pin()

    def type_pin(self, pin: str) -> None:
        """Enter digits as if tapped (tests, and a hardware keypad)."""
        for d in pin:
            self._digit(d)

    def _show_pin(self) -> None:
        self.pin_label.setText(" ".join("\u25cf" for _ in self.pin) or "PIN")

    def _submit(self) -> None:
        if self.name is None:
            self.message.setText("Choose your name first.")
            return
        if not self.pin:
            self.message.setText("Enter your PIN first.")
            return
        error = self._attempt(self.name, self.pin)
        self.pin = ""
        self._show_pin()
        if error is None:
            self.logged_in.emit()
        else:
            self.message.setText(error)
