"""The line's running counters: inspected, NOK, drops, throughput over a minute, latency."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from station.core.result import Counters, InspectionResult, Verdict

__all__ = ["LineStats"]


class LineStats:
    """Counters the status bar shows; updated by the inspector, read from any thread.

    Throughput counts the results finished in the last `window_s` seconds (scaled up while the
    line has run for less than that, so the first minute does not read low); latency percentiles
    are over the last `latency_window` results. Everything is bounded, whatever the run length.
    """

    def __init__(self, *, window_s: float = 60.0, latency_window: int = 500) -> None:
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        self._inspected = 0
        self._nok = 0
        self._check = 0
        self._dropped = 0
        self._bad = 0  # frames refused before a verdict
        self._model_ms_sum = 0.0
        self._first: float | None = None  # monotonic time of the first result
        self._finished: deque[float] = deque()  # monotonic finish times within the window
        self._latency: deque[float] = deque(maxlen=max(1, latency_window))
        # (inspected count, p50, p95): the display asks 15 times a second and a percentile over
        # 500 samples was the largest part of its tick; it only changes with a new result.
        self._percentiles: tuple[int, float, float] = (0, 0.0, 0.0)

    def add(self, result: InspectionResult, now: float | None = None) -> None:
        """Count one inspected frame."""
        t = time.monotonic() if now is None else now
        with self._lock:
            self._inspected += 1
            if result.verdict == Verdict.NOK:
                self._nok += 1
            elif result.verdict == Verdict.CHECK:
                self._check += 1
            self._model_ms_sum += result.stages_ms.total
            self._latency.append(result.latency_ms)
            if self._first is None:
                self._first = t
            self._finished.append(t)
            self._prune(t)

    def add_dropped(self, n: int = 1) -> None:
        """Count frames the queue dropped."""
        with self._lock:
            self._dropped += n

    def add_bad(self) -> int:
        """Count a frame refused before a verdict; the count so far."""
        with self._lock:
            self._bad += 1
            return self._bad

    @property
    def inspected(self) -> int:
        """Frames inspected so far."""
        with self._lock:
            return self._inspected

    @property
    def dropped(self) -> int:
        """Frames dropped so far."""
        with self._lock:
            return self._dropped

    @property
    def model_ms_mean(self) -> float:
        """Mean of the model's own stage times over every inspected frame."""
        with self._lock:
            return self._model_ms_sum / self._inspected if self._inspected else 0.0

    def counters(self, unrecorded: int = 0, now: float | None = None) -> Counters:
        """A frozen snapshot as `Counters`."""
        t = time.monotonic() if now is None else now
        with self._lock:
            self._prune(t)
            n_window = len(self._finished)
            seen, p50, p95 = self._percentiles
            lat = None
            if seen != self._inspected:
                lat = np.fromiter(self._latency, dtype=np.float64, count=len(self._latency))
            span = min(self.window_s, t - self._first) if self._first is not None else 0.0
            inspected, nok, check, dropped, bad = (
                self._inspected,
                self._nok,
                self._check,
                self._dropped,
                self._bad,
            )
        # Below a second of history a rate is noise; report none rather than a wild number.
        rate = n_window / span * 60.0 if span >= 1.0 else 0.0
        if lat is not None:
            p50, p95 = np.percentile(lat, [50, 95]).tolist()
            self._percentiles = (inspected, p50, p95)  # one tuple: a reader sees old or new
        return Counters(
            inspected=inspected,
            nok=nok,
            check=check,
            dropped=dropped,
            unrecorded=unrecorded,
            bad_frames=bad,
            throughput_per_min=float(rate),
            latency_p50_ms=float(p50),
            latency_p95_ms=float(p95),
        )

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._finished and self._finished[0] < horizon:
            self._finished.popleft()
