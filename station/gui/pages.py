"""The pages beside the operator's: Setup (technician), History and reports (QA), Settings (admin).

Each is given the app in its constructor and asks it for everything it shows, with the shell's
session (the app checks the role again). A page whose screens are not built yet says so plainly
and names what to use meanwhile.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from station.app.access import Session
from station.app.roles import Action, PermissionDenied
from station.core.errors import StationError

if TYPE_CHECKING:
    from station.app import StationApp


class Page(QWidget):
    """A page of the shell: a heading, a body, and `refresh()` whenever it is shown."""

    title = ""
    action: Action | None = None  # what the session must be allowed to open the page

    def __init__(self, app: StationApp, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(16, 8, 16, 16)
        self.layout_.setSpacing(16)
        heading = QLabel(self.title, self)
        heading.setObjectName("Heading")
        self.layout_.addWidget(heading)
        self.cards: dict[QLabel, QFrame] = {}

    def refresh(self, session: Session) -> None:
        """Show what is current for this session."""

    def left(self) -> None:
        """Another page is shown now."""

    def end_session(self) -> None:
        """The session that used this page ended (logout, idle): let go of what it held."""

    def text_card(self, text: str) -> QLabel:
        """A card of plain, wrapped text (a command in it is selectable); returns the label
        (its card is `self.cards[label]`)."""
        card = QFrame(self)
        card.setObjectName("Card")
        lay = QVBoxLayout(card)
        lay.setContentsMargins(20, 16, 20, 16)
        label = QLabel(text, card)
        label.setWordWrap(True)
        label.setObjectName("Stat")
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(label)
        self.layout_.addWidget(card)
        self.cards[label] = card
        return label


class SettingsPage(Page):
    """Admin: the users and the state of the audit trail."""

    title = "Settings"
    action = Action.SETTINGS

    def __init__(self, app: StationApp, parent: QWidget | None = None) -> None:
        super().__init__(app, parent)
        card = QFrame(self)
        card.setObjectName("Card")
        self.users_grid = QGridLayout(card)
        self.users_grid.setContentsMargins(20, 16, 20, 16)
        self.users_grid.setHorizontalSpacing(48)
        self.layout_.addWidget(card)
        self.users_label = QLabel("", card)
        self.users_label.setObjectName("Stat")
        self.users_grid.addWidget(self.users_label, 0, 0, 1, 3)
        self._user_cells: list[QLabel] = []
        row = QHBoxLayout()
        self.verify_button = QPushButton("Check the audit trail", self)
        self.verify_button.setStyleSheet("min-height: 80px; min-width: 320px;")
        self.verify_button.clicked.connect(self._verify)
        row.addWidget(self.verify_button)
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.audit_label = self.text_card("")
        self.text_card(
            "Users are added and removed on the station PC:\n"
            "  station users add NAME --role operator|technician|qa|admin\n"
            "  station users set-pin NAME      station users remove NAME\n"
            "Other settings are in the station's config file; editing them here is not built yet."
        )
        self.layout_.addStretch(1)
        self._session: Session | None = None

    def refresh(self, session: Session) -> None:
        """List the users (the app checks that the session is an admin)."""
        self._session = session
        self.audit_label.setText("Tap the button to check every audit row's hash chain.")
        try:
            users = self.app.access.users(session)
        except (PermissionDenied, StationError) as exc:
            self.users_label.setText(str(exc))
            return
        now = time.time()
        self.users_label.setText(f"{len(users)} users:")
        for cell in self._user_cells:
            self.users_grid.removeWidget(cell)
            cell.deleteLater()
        self._user_cells = []
        for i, u in enumerate(users, start=1):
            lock = f"locked for {u.locked_until - now:.0f} s" if u.locked_until > now else ""
            for j, text in enumerate((u.name, u.role.value, lock)):
                cell = QLabel(text, self)
                cell.setObjectName("Stat")
                self.users_grid.addWidget(cell, i, j)
                self._user_cells.append(cell)
        self.users_grid.setColumnStretch(2, 1)

    def _verify(self) -> None:
        if self._session is None:
            return
        try:
            result = self.app.verify_audit(self._session)
        except (PermissionDenied, StationError) as exc:
            self.audit_label.setText(str(exc))
            return
        if result.ok:
            self.audit_label.setText(f"Audit trail intact: {result.rows} rows checked.")
        else:
            self.audit_label.setText(f"AUDIT TRAIL BROKEN: {result.problem}")
