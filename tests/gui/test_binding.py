"""The Qt binding keeps Python's reference counts whole.

PySide6 6.12.0 on Python 3.11 gives back None, True and False without taking a reference: each
setText or emit takes one away, and after some hours of a running station (or one GUI test run)
the interpreter frees None and aborts. pyproject.toml keeps that release out; this test fails on
any binding that does it again, before an operator's screen does.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel


class _Source(QObject):
    changed = Signal(object)


def _counts() -> tuple[int, int, int]:
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


@pytest.mark.parametrize("call", ["setText", "emit", "property"])
def test_calls_leave_none_true_and_false_counted(qapp: Any, call: str) -> None:
    label = QLabel("x")
    source = _Source()
    seen: list[int] = []
    source.changed.connect(lambda value: seen.append(value))
    calls = {
        "setText": lambda: label.setText("OK"),
        "emit": lambda: source.changed.emit(1),
        "property": lambda: label.property("no-such-property"),
    }
    step = calls[call]
    step()
    before = _counts()
    for _ in range(500):
        step()
    after = _counts()
    # Other threads may hold or drop a few references meanwhile; a binding bug loses 500.
    lost = [b - a for b, a in zip(before, after, strict=True)]
    assert max(lost) < 100, f"{call} lost references to (None, True, False): {lost}"
