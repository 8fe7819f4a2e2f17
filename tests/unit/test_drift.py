"""Drift monitor: distributions that must and must not raise a level."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from station.config import DriftConfig
from station.core.errors import ModelError
from station.core.result import DriftLevel
from station.inspect.drift import DriftMonitor, drift_event

MEAN, SD = 10.0, 2.0


def baseline(seed: int = 0, n: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).normal(MEAN, SD, n)


def feed(monitor: DriftMonitor, scores: np.ndarray) -> list[DriftLevel]:
    """All level changes reported while feeding `scores`."""
    changes = []
    for s in scores:
        status = monitor.update(float(s))
        if status is not None:
            changes.append(status.level)
    return changes


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_same_distribution_never_raises(seed: int) -> None:
    # 5000 parts = 25 full windows and ~490 KS tests per seed: no false alarm.
    monitor = DriftMonitor(baseline(), DriftConfig())
    rng = np.random.default_rng(seed)
    assert feed(monitor, rng.normal(MEAN, SD, 5000)) == []
    status = monitor.status()
    assert status.level == DriftLevel.NONE
    assert status.window == 200
    assert abs(status.mean_shift_sd) < 0.5


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_shift_of_one_and_a_half_sd_is_a_warning(direction: float) -> None:
    monitor = DriftMonitor(baseline(), DriftConfig())
    rng = np.random.default_rng(11)
    changes = feed(monitor, rng.normal(MEAN + direction * 1.5 * SD, SD, 2000))
    assert changes == [DriftLevel.WARNING]  # once, and never escalated or flapping
    status = monitor.status()
    assert status.level == DriftLevel.WARNING
    assert 1.0 < direction * status.mean_shift_sd < 2.0


def test_shift_of_three_sd_is_critical() -> None:
    monitor = DriftMonitor(baseline(), DriftConfig())
    rng = np.random.default_rng(12)
    changes = feed(monitor, rng.normal(MEAN + 3 * SD, SD, 1000))
    assert changes == [DriftLevel.CRITICAL]
    assert monitor.status().mean_shift_sd > 2.0


def test_wider_spread_with_same_mean_is_caught_by_ks() -> None:
    cfg = DriftConfig()
    monitor = DriftMonitor(baseline(), cfg)
    rng = np.random.default_rng(13)
    changes = feed(monitor, rng.normal(MEAN, 3 * SD, 2000))
    status = monitor.status()
    assert DriftLevel.WARNING in changes
    assert status.level != DriftLevel.NONE
    # The KS statistic raised it, not the mean.
    assert abs(status.mean_shift_sd) < cfg.mean_shift_warning
    assert status.ks_statistic >= cfg.ks_warning
    assert status.ks_pvalue < cfg.p_value


def test_no_level_before_min_samples() -> None:
    cfg = DriftConfig(min_samples=50)
    monitor = DriftMonitor(baseline(), cfg)
    far_off = np.full(49, MEAN + 10 * SD)
    assert feed(monitor, far_off) == []
    assert monitor.status().level == DriftLevel.NONE
    assert monitor.status().window == 49
    status = monitor.update(MEAN + 10 * SD)  # the 50th
    assert status is not None and status.level == DriftLevel.CRITICAL


def test_level_clears_when_the_scores_come_back() -> None:
    monitor = DriftMonitor(baseline(), DriftConfig())
    rng = np.random.default_rng(14)
    assert feed(monitor, rng.normal(MEAN + 3 * SD, SD, 300)) == [DriftLevel.CRITICAL]
    back = feed(monitor, rng.normal(MEAN, SD, 600))
    assert back[-1] == DriftLevel.NONE
    assert monitor.level == DriftLevel.NONE


def test_ks_is_recomputed_every_n_updates() -> None:
    monitor = DriftMonitor(baseline(), DriftConfig(window=100, min_samples=20), ks_every=10)
    rng = np.random.default_rng(15)
    seen = []
    for s in rng.normal(MEAN, SD, 80):
        monitor.update(float(s))
        seen.append(monitor.status().ks_statistic)
    # 0 before min_samples, computed at the 20th score, then held for 10 updates at a time.
    assert seen[:19] == [0.0] * 19
    assert len(set(seen[19:29])) == 1 and seen[29] != seen[28]


def test_drift_event_carries_the_statistics() -> None:
    monitor = DriftMonitor(baseline(), DriftConfig())
    status = None
    for s in np.random.default_rng(16).normal(MEAN + 3 * SD, SD, 100):
        status = monitor.update(float(s)) or status
    assert status is not None
    event = drift_event(status)
    assert event.kind == "drift"
    assert "critical" in event.message and "sd" in event.message
    assert event.data["level"] == "critical"
    assert event.data["mean_shift_sd"] == status.mean_shift_sd
    assert event.data["window"] == status.window
    assert event.data["baseline_n"] == 1000
    assert abs(event.data["baseline_mean"] - MEAN) < 0.3


def test_bad_inputs() -> None:
    with pytest.raises(ModelError, match="baseline scores"):
        DriftMonitor(np.array([1.0, 2.0, np.nan]), DriftConfig())
    monitor = DriftMonitor(baseline(), DriftConfig(min_samples=1))
    assert monitor.update(float("nan")) is None
    assert monitor.status().window == 0
    # Identical calibration scores must not divide by zero.
    flat = DriftMonitor(np.full(100, 5.0), DriftConfig(min_samples=1))
    assert flat.update(5.0) is None
    assert flat.update(6.0) is not None


def test_status_is_safe_from_other_threads() -> None:
    monitor = DriftMonitor(baseline(), DriftConfig())
    rng = np.random.default_rng(17)
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                s = monitor.status()
                assert s.window == len(s.recent)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    feed(monitor, rng.normal(MEAN, SD, 3000))
    done.set()
    for t in threads:
        t.join()
    assert errors == []
