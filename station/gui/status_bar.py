"""Status bar: camera (model, serial, fps), model version and threshold, runtime, disk, the
active alarms (a plant link lost, records not written, ...), clock."""

from __future__ import annotations

import time

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QWidget

from station.core.result import LineStatus

RUNTIME_NAMES = {"tensorrt": "TensorRT", "onnx": "ONNX Runtime", "torch": "torch"}
LOW_DISK_MB = 1024.0  # the disk item warns below 1 GB, well before records stop


def runtime_name(runtime: str) -> str:
    """'onnx' -> 'ONNX Runtime' etc.; unknown names unchanged."""
    return RUNTIME_NAMES.get(runtime.lower(), runtime) if runtime else "runtime -"


def disk_text(free_mb: float | None) -> str:
    """Free space as the operator reads it."""
    if free_mb is None:
        return "disk ?"
    if free_mb >= 1024:
        return f"disk {free_mb / 1024:.1f} GB free"
    return f"disk {free_mb:.0f} MB free"


def status_texts(status: LineStatus) -> dict[str, str]:
    """The text of each status item."""
    thr = "-" if status.threshold is None else f"{status.threshold:.2f}"
    if status.check_threshold is not None:
        thr += f", check {status.check_threshold:.2f}"
    return {
        "camera": f"Camera: {status.camera or '-'}",
        "model": f"Model: {status.model_version or 'none'}  limit {thr}",
        "runtime": runtime_name(status.runtime),
        "disk": disk_text(status.disk_free_mb),
        "alarm": alarm_text(status.alarms),
    }


ALARM_CHARS = 34  # of the first alarm shown in the bar; the whole text is in its tooltip


def alarm_text(alarms: tuple[str, ...]) -> str:
    """The first active alarm and how many more; empty without any."""
    if not alarms:
        return ""
    more = f" (+{len(alarms) - 1} more)" if len(alarms) > 1 else ""
    first = alarms[0]
    if len(first) > ALARM_CHARS:  # the count must stay visible: the label clips on the right
        first = first[: ALARM_CHARS - 1].rstrip() + "\u2026"
    return f"\u26a0 {first}{more}"


class StatusBar(QFrame):
    """One row of plain labels (no hover tooltips: everything is written out)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("StatusBar")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 4, 12, 4)
        lay.setSpacing(24)
        self.items: dict[str, QLabel] = {}
        for key, stretch in (
            ("camera", 3),
            ("model", 4),
            ("runtime", 0),
            ("disk", 0),
            ("alarm", 4),
            ("clock", 0),
        ):
            label = QLabel("-", self)
            label.setObjectName("StatusItem")
            if stretch:
                # Long camera names are cut at the label, not pushed off the screen.
                label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            lay.addWidget(label, stretch)
            self.items[key] = label
        self.items["alarm"].setStyleSheet("font-weight: bold;")
        self._shown: dict[str, str] = {}
        self._low_disk = False

    def set_status(self, status: LineStatus) -> bool:
        """Show the line's snapshot; True when an item changed (unchanged ones are not touched)."""
        changed = False
        texts = status_texts(status)
        for key, text in texts.items():
            changed |= self._set(key, text)
        # Without an alarm its label leaves the row, so camera and model are not cut for room
        # that stays empty.
        alarm = self.items["alarm"]
        if alarm.isVisibleTo(self) != bool(texts["alarm"]):
            alarm.setVisible(bool(texts["alarm"]))
            changed = True
        tip = "\n".join(status.alarms)
        if self.items["alarm"].toolTip() != tip:
            self.items["alarm"].setToolTip(tip)
        low = status.disk_free_mb is not None and status.disk_free_mb < LOW_DISK_MB
        if low != self._low_disk:
            self._low_disk = low
            style = "font-weight: bold; text-decoration: underline;" if low else ""
            self.items["disk"].setStyleSheet(style)
            changed = True
        return changed

    def tick_clock(self, now: float | None = None) -> bool:
        """Show the time (called once a second or so); True when it changed."""
        return self._set("clock", time.strftime("%H:%M:%S", time.localtime(now)))

    def _set(self, key: str, text: str) -> bool:
        if self._shown.get(key) == text:
            return False
        self.items[key].setText(text)
        self._shown[key] = text
        return True

    def text(self, key: str) -> str:
        """The text of one item as shown."""
        return self.items[key].text()
