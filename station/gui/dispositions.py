"""What happened to a part, in two taps with gloves: the disposition, then the reason.

The panel only collects the choice and emits it; the page that holds it asks the app (which
checks the role, refuses a disposition that does not fit the part, and writes the audit row).
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from station.app.quality import LABELS, Disposition

# Reasons a person picks most often, per disposition; anything else is typed.
REASONS: dict[Disposition, tuple[str, ...]] = {
    Disposition.CONFIRMED: ("Defect visible on the part", "Scratch or dent", "Contamination"),
    Disposition.FALSE_REJECT: (
        "Part is good",
        "Dust or debris, part clean",
        "Reflection or lighting",
    ),
    Disposition.REWORK: ("Sent to the rework station", "Reworked and passed"),
    Disposition.MISSED: ("Found at a later station", "Found at final check", "Customer return"),
}
# 60 px inside the border and padding: above the 60 px a gloved finger needs, and three reasons
# with the typed one fit beside the picture at 1280x800.
BUTTON = "min-height: 60px; font-size: 17pt; text-align: left; padding-left: 20px;"


class DispositionPanel(QWidget):
    """Disposition buttons, then reasons; emits `chosen(kind value, reason)`."""

    chosen = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(8)
        self.standing = QLabel("", self)
        self.standing.setObjectName("Caption")
        self.standing.setWordWrap(True)
        outer.addWidget(self.standing)
        self.steps = QStackedWidget(self)
        outer.addWidget(self.steps)

        kinds = QWidget(self)
        self.kinds_layout = QVBoxLayout(kinds)
        self.kinds_layout.setContentsMargins(0, 0, 0, 0)
        self.kinds_layout.setSpacing(8)
        self.kind_buttons: dict[Disposition, QPushButton] = {}
        for d in Disposition:
            b = QPushButton(LABELS[d], kinds)
            b.setStyleSheet(BUTTON)
            b.clicked.connect(lambda _=False, d=d: self._pick(d))
            self.kinds_layout.addWidget(b)
            self.kind_buttons[d] = b
        self.kinds_layout.addStretch(1)
        self.steps.addWidget(kinds)

        reasons = QWidget(self)
        lay = QVBoxLayout(reasons)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        self.question = QLabel("", reasons)
        self.question.setObjectName("Stat")
        self.question.setWordWrap(True)
        lay.addWidget(self.question)
        self.reason_buttons: list[QPushButton] = []
        for _ in range(max(len(r) for r in REASONS.values())):
            b = QPushButton("", reasons)
            b.setStyleSheet(BUTTON)
            b.clicked.connect(lambda _=False, b=b: self._emit(b.text()))
            lay.addWidget(b)
            self.reason_buttons.append(b)
        row = QHBoxLayout()
        self.other = QLineEdit(reasons)
        self.other.setPlaceholderText("Other reason")
        self.record_button = QPushButton("Record", reasons)
        self.record_button.setObjectName("Primary")
        self.record_button.setEnabled(False)
        self.record_button.clicked.connect(lambda: self._emit(self.other.text()))
        self.other.returnPressed.connect(lambda: self._emit(self.other.text()))
        self.other.textChanged.connect(lambda t: self.record_button.setEnabled(bool(t.strip())))
        self.back_button = QPushButton("Back", reasons)
        self.back_button.clicked.connect(lambda: self.steps.setCurrentIndex(0))
        row.addWidget(self.other, 1)
        row.addWidget(self.record_button)
        row.addWidget(self.back_button)
        lay.addLayout(row)
        self.steps.addWidget(reasons)
        self.kind: Disposition | None = None

    def offer(self, kinds: tuple[Disposition, ...], standing: str = "") -> None:
        """Offer these dispositions (the ones that fit the part), from the first step."""
        for d, b in self.kind_buttons.items():
            b.setVisible(d in kinds)
        self.standing.setText(standing)
        self.steps.setCurrentIndex(0)
        self.setEnabled(bool(kinds))

    def show_recorded(self, text: str) -> None:
        """Back to the first step with what was just recorded."""
        self.standing.setText(text)
        self.steps.setCurrentIndex(0)

    def _pick(self, d: Disposition) -> None:
        self.kind = d
        self.question.setText(f"{LABELS[d]}: why?")
        options = REASONS[d]
        for i, b in enumerate(self.reason_buttons):
            b.setVisible(i < len(options))
            b.setText(options[i] if i < len(options) else "")
        self.other.clear()
        self.steps.setCurrentIndex(1)

    def _emit(self, reason: str) -> None:
        if self.kind is not None and reason.strip():
            self.chosen.emit(self.kind.value, reason.strip())
