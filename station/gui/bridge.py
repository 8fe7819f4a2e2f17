"""The one place where the line's plain callbacks meet Qt.

`StationApp.subscribe` callbacks run on the line's fan-out thread. They only append to bounded
deques (thread-safe in CPython, no Qt call, no lock held against the line); the display timer calls
`poll()` on the GUI thread, which drains the deques and emits Qt signals. A slow or frozen GUI
therefore never holds up the fan-out thread, and a burst of parts costs the GUI only the newest
ones (the deques drop the oldest).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal

from station.core.result import InspectionResult, StationEvent, Verdict

log = logging.getLogger(__name__)

Unsubscribe = Callable[[], None]


class Subscribable(Protocol):
    """What the bridge uses of the app: result and event subscriptions."""

    def subscribe(self, callback: Callable[[InspectionResult], None]) -> Unsubscribe:
        """Call `callback` with every result on the fan-out thread."""
        ...

    def subscribe_events(self, callback: Callable[[StationEvent], None]) -> Unsubscribe:
        """Call `callback` with every station event on the fan-out thread."""
        ...


@dataclass(frozen=True)
class ScorePoint:
    """One part on the score trend; `seq` counts results since the GUI started listening."""

    seq: int
    frame_id: int
    score: float
    threshold: float
    verdict: Verdict
    time: float


class LineBridge(QObject):
    """Collects results and events off the GUI thread; `poll()` re-emits them as Qt signals."""

    # Not named `event`: that would hide QObject.event() and break the object's event handling.
    scores_arrived = Signal(list)  # list[ScorePoint], oldest first
    nok_arrived = Signal(object)  # InspectionResult of a NOK or CHECK part (anomaly map kept)
    event_arrived = Signal(object)  # StationEvent

    def __init__(
        self,
        line: Subscribable,
        parent: QObject | None = None,
        *,
        max_scores: int = 1000,
        max_nok: int = 8,
        max_events: int = 64,
    ) -> None:
        super().__init__(parent)
        self._scores: deque[ScorePoint] = deque(maxlen=max_scores)
        # NOK results hold a full image and map each: keep only what the strip can show.
        self._nok: deque[InspectionResult] = deque(maxlen=max_nok)
        self._events: deque[StationEvent] = deque(maxlen=max_events)
        # Frame ids restart when a camera reconnects; the trend needs a count that never does.
        self._seq = 0
        self._unsubscribe: list[Unsubscribe] = [
            line.subscribe(self._on_result),
            line.subscribe_events(self._on_event),
        ]

    # -- fan-out thread: no Qt here ------------------------------------------------------------
    def _on_result(self, result: InspectionResult) -> None:
        self._seq += 1
        self._scores.append(
            ScorePoint(
                self._seq,
                result.frame_id,
                result.score,
                result.threshold,
                result.verdict,
                result.timestamp,
            )
        )
        if result.verdict != Verdict.OK:  # NOK and CHECK parts: the strip shows both
            self._nok.append(result)

    def _on_event(self, event: StationEvent) -> None:
        self._events.append(event)

    # -- GUI thread ---------------------------------------------------------------------------
    def poll(self, max_nok: int = 1) -> bool:
        """Drain what arrived since the last call and emit it; True when anything was emitted.

        At most `max_nok` NOK parts per call: each costs a thumbnail, and the deque keeps the
        newest, so a burst is drawn over a few display updates instead of one long one.
        """
        points = _drain(self._scores)
        events = _drain(self._events)
        noks = [self._nok.popleft() for _ in range(min(max_nok, len(self._nok)))]
        if points:
            self.scores_arrived.emit(points)
        for r in noks:
            self.nok_arrived.emit(r)
        for e in events:
            self.event_arrived.emit(e)
        return bool(points or noks or events)

    @property
    def pending_nok(self) -> int:
        """NOK parts received and not yet emitted."""
        return len(self._nok)

    def close(self) -> None:
        """Stop listening to the line (idempotent)."""
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:  # the line may already be torn down; nothing to release then
                log.debug("unsubscribe failed", exc_info=True)
        self._unsubscribe = []


def _drain(d: deque[Any]) -> list[Any]:
    out = []
    while True:
        try:
            out.append(d.popleft())
        except IndexError:
            return out
