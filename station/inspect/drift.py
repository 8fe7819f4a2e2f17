"""Drift monitor: do the scores of good parts still look like the model's calibration scores?

The caller feeds the scores of parts judged OK (NOK parts are defects, not drift). The last
`cfg.window` of them are compared with the baseline scores stored in the model artifact with two
statistics, each with its own limits:

- mean shift, in baseline standard deviations: the *location* of the scores. Light, focus or
  a different batch of material usually moves all scores together. Both directions count: scores
  that fall (a blurred image looks "smoother") hide defects as surely as rising scores flood the
  line with false NOKs.
- two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp) on the *mean-centred* samples: the
  *shape* - a wider spread, a second mode (e.g. two part variants), a long tail - that leaves the
  mean where it was. Centring is deliberate: on raw samples a pure shift of 0.5 sd already gives
  KS ~ 0.2 and 1.5 sd gives ~ 0.55, so the KS limits would overrule the mean-shift limits and
  grade every shift "critical". A KS statistic only counts when its p-value is below
  `cfg.p_value`, so small windows do not raise alarms on noise.

The level is the worse of the two. No level before `cfg.min_samples` scores. A level is held until
its statistics fall below `CLEAR_FRACTION` of the limits that raised it, so a line sitting on a
limit does not write an event every few parts.

Cost: the mean shift is updated on every score (a 200-value mean); the KS test (~1.5 ms for 200
against 1000 baseline scores) runs every `ks_every` updates - default window/20, i.e. every 10
parts at the default window of 200 - and once as soon as `min_samples` is reached. At 2 parts/s
the statistics are at most 5 s old.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np
from scipy.stats import ks_2samp

from station.config import DriftConfig
from station.core.errors import ModelError
from station.core.result import DriftLevel, DriftStatus, StationEvent

MIN_BASELINE = 10  # fewer calibration scores give no meaningful distribution
CLEAR_FRACTION = 0.8  # a level clears when its statistics are below 80% of its limits
_RANK = {DriftLevel.NONE: 0, DriftLevel.WARNING: 1, DriftLevel.CRITICAL: 2}


class DriftMonitor:
    """Compares recent OK scores with the model's baseline scores; thread-safe."""

    def __init__(
        self,
        baseline_scores: np.ndarray,
        cfg: DriftConfig | None = None,
        *,
        ks_every: int | None = None,
    ) -> None:
        """Raises ModelError when the baseline has fewer than MIN_BASELINE finite scores."""
        self.cfg = cfg or DriftConfig()
        base = np.asarray(baseline_scores, dtype=np.float64).ravel()
        base = base[np.isfinite(base)]
        if base.size < MIN_BASELINE:
            raise ModelError(
                f"drift monitor: the model has {base.size} baseline scores, at least "
                f"{MIN_BASELINE} are needed (recalibrate the model)"
            )
        self.window = max(1, int(self.cfg.window))
        self.min_samples = min(max(1, int(self.cfg.min_samples)), self.window)
        self.ks_every = max(1, ks_every if ks_every is not None else self.window // 20)
        self.baseline_mean = float(base.mean())
        sd = float(base.std(ddof=1))
        # Identical calibration scores (sd 0) would make any change infinitely many sds.
        self.baseline_sd = max(sd, 1e-9 * max(1.0, abs(self.baseline_mean)))
        self._base_centred = base - self.baseline_mean
        self._baseline = tuple(float(x) for x in base)
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=self.window)
        self.reset()

    def reset(self) -> None:
        """Forget the recent scores (e.g. after a threshold or camera change)."""
        with self._lock:
            self._recent.clear()
            self._ks_stat = 0.0
            self._ks_p = 1.0
            self._ks_valid = False
            self._since_ks = 0
            self._shift = 0.0
            self._level = DriftLevel.NONE

    def update(self, score: float) -> DriftStatus | None:
        """Add one OK score; returns the new status when the level changed, else None."""
        s = float(score)
        if not math.isfinite(s):
            return None
        with self._lock:
            self._recent.append(s)
            n = len(self._recent)
            recent = np.fromiter(self._recent, dtype=np.float64, count=n)
            mean = float(recent.mean())
            self._shift = (mean - self.baseline_mean) / self.baseline_sd
            if n < self.min_samples:
                level = DriftLevel.NONE
            else:
                self._since_ks += 1
                if not self._ks_valid or self._since_ks >= self.ks_every:
                    res = ks_2samp(recent - mean, self._base_centred)
                    self._ks_stat = float(res.statistic)
                    self._ks_p = float(res.pvalue)
                    self._ks_valid = True
                    self._since_ks = 0
                level = self._grade()
            if level == self._level:
                return None
            self._level = level
            return self._status_locked()

    def status(self) -> DriftStatus:
        """The current level and the statistics behind it (a frozen snapshot)."""
        with self._lock:
            return self._status_locked()

    @property
    def level(self) -> DriftLevel:
        """The current level."""
        with self._lock:
            return self._level

    def _status_locked(self) -> DriftStatus:
        return DriftStatus(
            level=self._level,
            ks_statistic=self._ks_stat,
            ks_pvalue=self._ks_p,
            mean_shift_sd=self._shift,
            window=len(self._recent),
            recent=tuple(self._recent),
            baseline=self._baseline,
        )

    def _raw_level(self, scale: float) -> DriftLevel:
        c = self.cfg
        ks = self._ks_stat if self._ks_p < c.p_value else 0.0
        shift = abs(self._shift)
        if ks >= c.ks_critical * scale or shift >= c.mean_shift_critical * scale:
            return DriftLevel.CRITICAL
        if ks >= c.ks_warning * scale or shift >= c.mean_shift_warning * scale:
            return DriftLevel.WARNING
        return DriftLevel.NONE

    def _grade(self) -> DriftLevel:
        raised = self._raw_level(1.0)
        held = self._raw_level(CLEAR_FRACTION)
        # Rise at once; fall only as far as the relaxed limits allow.
        kept = self._level if _RANK[held] >= _RANK[self._level] else held
        return raised if _RANK[raised] >= _RANK[kept] else kept


def drift_event(status: DriftStatus) -> StationEvent:
    """The event to record for a level change, with the statistics behind it."""
    recent = np.asarray(status.recent, dtype=np.float64)
    base = np.asarray(status.baseline, dtype=np.float64)

    def _sd(a: np.ndarray) -> float:
        return float(a.std(ddof=1)) if a.size > 1 else 0.0

    what = "cleared" if status.level == DriftLevel.NONE else status.level.value
    message = (
        f"drift {what}: mean shift {status.mean_shift_sd:+.2f} sd, "
        f"KS {status.ks_statistic:.3f} (p={status.ks_pvalue:.2g}) over {status.window} OK parts"
    )
    return StationEvent(
        kind="drift",
        message=message,
        data={
            "level": status.level.value,
            "ks_statistic": status.ks_statistic,
            "ks_pvalue": status.ks_pvalue,
            "mean_shift_sd": status.mean_shift_sd,
            "window": status.window,
            "recent_mean": float(recent.mean()) if recent.size else None,
            "recent_sd": _sd(recent),
            "baseline_mean": float(base.mean()) if base.size else None,
            "baseline_sd": _sd(base),
            "baseline_n": int(base.size),
        },
    )
