"""Decisions: verdict from score and threshold, and thresholds that meet a miss-rate target."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from station.core.result import Verdict


def verdict(score: float, threshold: float, check: float | None = None) -> Verdict:
    """NOK when the score reaches the threshold (a score equal to it is rejected: fail safe);
    CHECK when it reaches the check limit below it (a band for a manual check); else OK.

    A score or limit that is not a finite number is NOK: NaN compares false with everything and
    would otherwise pass as OK.
    """
    if not (math.isfinite(score) and math.isfinite(threshold)):
        return Verdict.NOK
    if check is not None and not math.isfinite(check):
        return Verdict.NOK
    if score >= threshold:
        return Verdict.NOK
    if check is not None and score >= check:
        return Verdict.CHECK
    return Verdict.OK


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold with what it costs on a labelled set."""

    threshold: float
    target_fnr: float
    fnr: float
    fpr: float
    tp: int  # defective parts rejected
    fn: int  # defective parts passed (misses)
    fp: int  # good parts rejected (false rejects)
    tn: int


def threshold_for_fnr(good: np.ndarray, defect: np.ndarray, target_fnr: float) -> ThresholdChoice:
    """The highest threshold whose miss rate on `defect` stays at or under `target_fnr`.

    Highest, because every step down costs false rejects of good parts.
    """
    good = np.sort(np.asarray(good, np.float64))
    defect = np.sort(np.asarray(defect, np.float64))
    if defect.size == 0:
        raise ValueError("no defective parts: a miss rate cannot be calibrated")
    allowed_misses = math.floor(target_fnr * defect.size + 1e-9)
    t = float(defect[allowed_misses])
    fn = int(np.sum(defect < t))
    fp = int(np.sum(good >= t))
    return ThresholdChoice(
        threshold=t,
        target_fnr=target_fnr,
        fnr=fn / defect.size,
        fpr=fp / good.size if good.size else float("nan"),
        tp=int(defect.size - fn),
        fn=fn,
        fp=fp,
        tn=int(good.size - fp),
    )
