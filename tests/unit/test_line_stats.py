"""The line's counters: latency percentiles follow every new result (they are kept between
results, since the display asks for them 15 times a second)."""

from __future__ import annotations

import numpy as np

from station.core.result import InspectionResult, Verdict
from station.inspect.stats import LineStats


def _result(latency_ms: float, verdict: Verdict = Verdict.OK) -> InspectionResult:
    return InspectionResult(
        frame_id=0,
        timestamp=0.0,
        source="test",
        score=1.0,
        threshold=2.0,
        verdict=verdict,
        latency_ms=latency_ms,
        model_version="v0001",
        image=np.zeros((4, 4), np.uint8),
    )


def test_latency_percentiles_follow_each_new_result() -> None:
    stats = LineStats(latency_window=50)
    assert stats.counters().latency_p95_ms == 0.0  # nothing inspected yet
    lat = list(np.random.default_rng(0).uniform(20, 80, 30))
    for x in lat:
        stats.add(_result(x))
    c = stats.counters()
    assert c.inspected == 30
    assert c.latency_p50_ms == float(np.percentile(lat, 50))
    assert c.latency_p95_ms == float(np.percentile(lat, 95))
    assert stats.counters() == c  # asked again with nothing new: the same figures
    # One slow part moves p95 at once, and the window forgets the oldest.
    more = [500.0] * 25
    for x in more:
        stats.add(_result(x, Verdict.NOK))
    c2 = stats.counters()
    window = (lat + more)[-50:]
    assert c2.latency_p95_ms == float(np.percentile(window, 95)) == 500.0
    assert c2.latency_p50_ms == float(np.percentile(window, 50))
    assert c2.nok == 25
