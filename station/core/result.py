"""Typed records every stage shares: frames from the camera, results from the inspector to
displays, the recorder and the drift monitor, events, and the line's status snapshot."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from station.core.compat import StrEnum


class Verdict(StrEnum):
    OK = "OK"
    CHECK = "CHECK"  # between the check limit and the reject limit: sent to a manual check
    NOK = "NOK"


class StationState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    CAMERA_LOST = "camera_lost"  # reconnecting with backoff
    MODEL_MISSING = "model_missing"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class DriftLevel(StrEnum):
    NONE = "none"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class BadFrame:
    """What a camera gives instead of a frame it could not deliver (an unreadable file, a frame
    over the size limit): the line counts it and records an event with the reason."""

    reason: str
    source: str
    path: str | None = None
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Frame:
    """One image from a camera, converted to the engine's input.

    `image` is HxW (mono) or HxWx3 (RGB order), uint8 or uint16, owned by the frame (copied out of
    any driver buffer). `frame_id` counts frames delivered since open; `device_frame_id` is the
    device's own counter where it has one (gaps there mean lost frames). `label` is the ground truth
    ("good" or a defect type) when a replay source knows it.
    """

    image: np.ndarray
    timestamp: float
    frame_id: int
    source: str
    device_frame_id: int | None = None
    label: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent in each stage of one inspection."""

    preprocess: float = 0.0
    backbone: float = 0.0
    knn: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.backbone + self.knn + self.postprocess


@dataclass(frozen=True)
class InspectionResult:
    """One inspected frame. `anomaly_map` (float32, image-sized) is kept for NOK parts only."""

    frame_id: int
    timestamp: float  # when the camera delivered the frame (epoch seconds)
    source: str
    score: float
    threshold: float
    verdict: Verdict
    latency_ms: float  # frame arrival to verdict, queue wait included
    model_version: str
    image: np.ndarray
    anomaly_map: np.ndarray | None = None
    stages_ms: StageTimes = field(default_factory=StageTimes)
    label: str | None = None  # ground truth when the source knows it (replay of MVTec layout)
    device_frame_id: int | None = None
    finished_at: float = field(default_factory=time.time)
    part_id: str = ""  # e.g. DEMO-20261201-000123, unique; what a person quotes for this part
    check_threshold: float | None = None  # the lower limit of the check band (None: no band)
    product: str = ""  # the product of the model that judged it


@dataclass(frozen=True)
class StationEvent:
    """Something worth a row in the events table: state changes, drift, model, camera, storage."""

    kind: str  # "state" | "drift" | "model" | "threshold" | "camera" | "storage" | "error"
    message: str
    time: float = field(default_factory=time.time)
    state: StationState | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftStatus:
    """The drift monitor's current view: level and the statistics behind it."""

    level: DriftLevel
    ks_statistic: float
    ks_pvalue: float
    mean_shift_sd: float
    window: int
    recent: tuple[float, ...] = ()
    baseline: tuple[float, ...] = ()


@dataclass(frozen=True)
class Counters:
    """Shift counters as the operator screen shows them.

    inspected / nok / dropped / unrecorded count the whole shift (earlier runs of the station in
    it included); throughput and latency describe the last minute of this run.
    """

    inspected: int = 0
    nok: int = 0
    check: int = 0  # parts in the check band, sent to a manual check (counted apart from NOK)
    dropped: int = 0  # frames the queue dropped because the model was slower than the camera
    unrecorded: int = 0  # results the recorder could not write (disk full, ...), never silent
    # Frames refused before a verdict in this run: unreadable, too large, scored not a number.
    # Each one is also an event with its reason.
    bad_frames: int = 0
    # Parts the reject gate rejected without a verdict in time (late, missing, refused), this
    # run; each one is also an event.
    failsafe_rejects: int = 0
    # Results that came after their part's reject deadline (the part was rejected fail-safe),
    # this run: a line whose inspection is too slow for its conveyor shows here first.
    late_results: int = 0
    throughput_per_min: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    shift: str = ""  # e.g. '2026-11-22/06'; empty when the records could not be read

    @property
    def nok_rate(self) -> float:
        return self.nok / self.inspected if self.inspected else 0.0


@dataclass(frozen=True)
class LineStatus:
    """A frozen snapshot of the running line, cheap to take from any thread (e.g. a GUI timer)."""

    state: StationState
    reason: str = ""
    counters: Counters = field(default_factory=Counters)
    drift: DriftStatus | None = None
    camera: str = ""  # "model serial @ fps" as the status bar shows it
    model_version: str = ""
    threshold: float | None = None
    check_threshold: float | None = None  # the model's check band starts here (None: no band)
    runtime: str = ""
    disk_free_mb: float | None = None
    alarms: tuple[str, ...] = ()  # e.g. "disk full: 12 results not recorded"
