"""What the plant interfaces share: the JSON a result or an event is sent as, and `Link`, the
up / down bookkeeping that makes each loss and return an event and an alarm."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from station.core.result import InspectionResult, StationEvent

log = logging.getLogger(__name__)

EventSink = Callable[[StationEvent], None]


def iso(t: float) -> str:
    """Epoch seconds as an ISO 8601 UTC time with milliseconds."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def station_name(configured: str, fallback: str = "") -> str:
    """The station's name for the plant: the configured one, the reports' one, the host's."""
    name = configured or fallback or socket.gethostname() or "station"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def result_json(result: InspectionResult, station: str) -> dict[str, Any]:
    """One result as the plant sees it (no image: the station's archive keeps those)."""
    return {
        "station": station,
        "part_id": result.part_id,
        "product": result.product,
        "verdict": result.verdict.value,
        "score": float(result.score),
        "limit": float(result.threshold),
        "check_limit": result.check_threshold,
        "model_version": result.model_version,
        "time": result.timestamp,
        "time_iso": iso(result.timestamp),
        "frame_id": result.frame_id,
        "latency_ms": round(float(result.latency_ms), 3),
        "label": result.label,
    }


def event_json(event: StationEvent, station: str) -> dict[str, Any]:
    """One station event as the plant sees it."""
    return {
        "station": station,
        "kind": event.kind,
        "message": event.message,
        "time": event.time,
        "time_iso": iso(event.time),
        "state": event.state.value if event.state is not None else None,
        "data": {k: _plain(v) for k, v in event.data.items()},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class Link:
    """The state of one connection to the plant (a broker, a listening port).

    `lost(why)` and `back()` report each change once, as an event of `kind` with
    `data["alarm"]`, and `alarm` says what is wrong while it lasts. The event callback is
    called outside any lock (it may come back into the output).
    """

    def __init__(self, kind: str, what: str, on_event: EventSink | None) -> None:
        self.kind = kind
        self.what = what  # e.g. "MQTT broker 10.0.0.5:1883"
        self._on_event = on_event
        self._lock = threading.Lock()
        self._down: str | None = "not connected yet"
        self._ever_up = False
        self._reported_down = False
        self.losses = 0

    @property
    def up(self) -> bool:
        return self._down is None

    @property
    def alarm(self) -> str | None:
        """E.g. 'MQTT broker 10.0.0.5:1883 lost: connection refused'; None while it is up."""
        with self._lock:
            down, reported = self._down, self._reported_down
        if down is None or not reported:
            return None
        return f"{self.what} {'lost' if self._ever_up else 'not reachable'}: {down}"

    def lost(self, why: str) -> None:
        """The connection is down (or could not be made); an event the first time."""
        with self._lock:
            if self._down is not None and self._reported_down:
                self._down = why  # still down: newer detail, no new event
                return
            self._down, self._reported_down = why, True
            self.losses += 1
            was_up = self._ever_up
        message = f"{self.what} {'lost' if was_up else 'not reachable'}: {why}"
        log.warning("%s", message)
        self._emit(StationEvent(kind=self.kind, message=message, data={"alarm": True, "up": False}))

    def back(self, detail: str = "") -> None:
        """The connection is up (again); an event when it had been reported down."""
        with self._lock:
            if self._down is None:
                return
            reported = self._reported_down
            self._down, self._reported_down, self._ever_up = None, False, True
        message = f"{self.what} {'back' if reported else 'connected'}" + (
            f": {detail}" if detail else ""
        )
        log.info("%s", message)
        self._emit(StationEvent(kind=self.kind, message=message, data={"alarm": False, "up": True}))

    def failed(self, why: str) -> None:
        """The output's own thread has ended on an error: an event and an alarm every time
        (unlike `lost`, also when the link was already down), never a silent death."""
        with self._lock:
            self._down, self._reported_down = why, True
            self.losses += 1
        message = f"{self.what}: {why}"
        log.error("%s", message)
        self._emit(StationEvent(kind=self.kind, message=message, data={"alarm": True, "up": False}))

    def _emit(self, event: StationEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("%s: the event could not be handed on", self.what)
