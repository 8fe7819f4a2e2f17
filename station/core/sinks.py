"""What the inspection line hands every result to: its sinks, given to it by the app.

A sink must not lose a result (the recorder spools what its queue cannot hold; an output that
drives a reject gate has its own deadline) and must not hold up the inspector: each call returns
quickly. Displays are not sinks: they subscribe to the line and may drop.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from station.core.result import InspectionResult, StationEvent


@runtime_checkable
class LineSink(Protocol):
    """Takes every result and event of the line, in the inspector's thread, without blocking."""

    def submit(self, result: InspectionResult) -> bool:
        """Take one result; False when it could not be kept (then it is counted as lost)."""
        ...

    def submit_event(self, event: StationEvent) -> bool:
        """Take one event (state change, drift, model, camera, storage, error)."""
        ...

    def count_dropped(self, n: int = 1, when: float | None = None) -> None:
        """Frames the line's queue dropped because the model was slower than the camera."""
        ...
