"""What a technician checks before collecting parts: focus, exposure, illumination, frame rate.

Pure numpy on each frame (reduced to at most 512 px first: the figures do not need more, and a
5 MP frame must not cost the live view a second):

- focus: variance of the Laplacian (sharper edges, larger); the best value seen is kept, so
  turning the focus ring shows when it peaks;
- exposure: a 64-bin histogram, and the shares of clipped dark and bright pixels (detail lost
  there for good);
- illumination: the mean of each cell of a coarse grid, and the darkest cell against the
  brightest (1.0 = even light);
- rate: frames per second over the last frames, and frames lost (gaps in the device's or the
  source's frame counter).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from station.core.result import Frame

MAX_SIDE = 512
GRID = 4
BINS = 64
CLIP_SHARE = 0.005  # of the range at either end counts as clipped (at 8 bits: 0-1 and 254-255)


@dataclass(frozen=True)
class FrameCheck:
    """The figures of one frame."""

    focus: float
    histogram: np.ndarray  # BINS counts, dark to bright
    dark_clipped: float  # share of pixels at the bottom of the range
    bright_clipped: float
    grid: np.ndarray  # GRID x GRID mean brightness, 0..1
    uniformity: float  # darkest cell / brightest cell

    @property
    def mean(self) -> float:
        return float(self.grid.mean())


def gray_unit(image: np.ndarray) -> np.ndarray:
    """The frame as float32 grey in 0..1, reduced to at most MAX_SIDE on its long side."""
    g = image if image.ndim == 2 else image[..., :3].mean(axis=2)
    full = 65535.0 if image.dtype == np.uint16 else 255.0
    g = g.astype(np.float32) / full
    h, w = g.shape
    if max(h, w) > MAX_SIDE:
        s = MAX_SIDE / max(h, w)
        g = cv2.resize(
            g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
        )
    return g


def focus_score(gray: np.ndarray) -> float:
    """Variance of the Laplacian of a 0..1 grey image, scaled to 8-bit levels."""
    return float(cv2.Laplacian(gray * 255.0, cv2.CV_32F).var())


def check_frame(image: np.ndarray) -> FrameCheck:
    """Focus, exposure and illumination of one frame."""
    g = gray_unit(image)
    hist = np.histogram(g, bins=BINS, range=(0.0, 1.0))[0]
    h, w = g.shape
    cells = np.array(
        [
            [
                float(
                    g[
                        i * h // GRID : (i + 1) * h // GRID, j * w // GRID : (j + 1) * w // GRID
                    ].mean()
                )
                for j in range(GRID)
            ]
            for i in range(GRID)
        ],
        np.float32,
    )
    hi = float(cells.max())
    return FrameCheck(
        focus=focus_score(g),
        histogram=hist,
        dark_clipped=float(np.mean(g <= CLIP_SHARE)),
        bright_clipped=float(np.mean(g >= 1.0 - CLIP_SHARE)),
        grid=cells,
        uniformity=float(cells.min()) / hi if hi > 0 else 0.0,
    )


@dataclass(frozen=True)
class CameraReport:
    """The live view's figures: the last frame's check, the best focus seen, rate and losses."""

    frame: FrameCheck
    best_focus: float
    fps: float
    frames: int
    dropped: int


class CameraCheck:
    """Accumulates the figures over the frames of a camera check."""

    def __init__(self, window: int = 30) -> None:
        self.best_focus = 0.0
        self.frames = 0
        self.dropped = 0
        self._times: deque[float] = deque(maxlen=max(2, window))
        self._last_id: int | None = None

    def add(self, frame: Frame, now: float | None = None) -> CameraReport:
        """Check one frame and update the running figures."""
        fc = check_frame(frame.image)
        self.frames += 1
        self.best_focus = max(self.best_focus, fc.focus)
        counter = frame.device_frame_id if frame.device_frame_id is not None else frame.frame_id
        if self._last_id is not None and counter > self._last_id + 1:
            self.dropped += counter - self._last_id - 1
        self._last_id = counter
        self._times.append(time.monotonic() if now is None else now)
        span = self._times[-1] - self._times[0]
        fps = (len(self._times) - 1) / span if span > 0 else 0.0
        return CameraReport(fc, self.best_focus, fps, self.frames, self.dropped)
