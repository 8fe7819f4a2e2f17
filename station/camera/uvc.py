"""USB (UVC) webcams through OpenCV, for pilots before an industrial camera is bought."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import cv2
import numpy as np

from station.camera.base import CameraContext, CameraInfo
from station.config import UVCConfig
from station.core.errors import CameraError, ImageError
from station.core.imageio import to_engine_image
from station.core.result import Frame

__all__ = ["UVCCamera"]

log = logging.getLogger(__name__)

# A webcam that stops delivering for this many reads in a row is treated as unplugged.
_FAILED_READS_FOR_LOSS = 5


class UVCCamera(CameraContext):
    """A USB webcam by index; frames are RGB uint8. Unplugging raises CameraError."""

    kind = "uvc"

    def __init__(
        self,
        index: int = 0,
        *,
        width: int = 0,
        height: int = 0,
        capture_factory: Callable[[int], Any] | None = None,
    ) -> None:
        self.index = index
        self.width = width
        self.height = height
        # Tests swap in a fake capture; the station uses OpenCV's default backend.
        self._factory = capture_factory or cv2.VideoCapture
        self._cap: Any = None
        self._lock = threading.Lock()
        self._frame_id = 0

    @classmethod
    def from_config(cls, cfg: UVCConfig, device: str | None = None) -> UVCCamera:
        """Build from `[camera.uvc]`; `device` (an index) overrides `cfg.index`."""
        index = cfg.index
        if device:
            try:
                index = int(device)
            except ValueError:
                raise CameraError(
                    f"USB camera device must be an index (0, 1, ...), got '{device}'"
                ) from None
        return cls(index, width=cfg.width, height=cfg.height)

    def open(self) -> None:
        """Open the webcam and apply the configured size; idempotent."""
        with self._lock:
            if self._cap is not None:
                return
            cap = self._factory(self.index)
            if not cap.isOpened():
                cap.release()
                raise CameraError(
                    f"no USB camera at index {self.index} (unplugged, busy in another program, "
                    "or no permission on /dev/video*)"
                )
            if self.width > 0:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height > 0:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if (self.width and got[0] != self.width) or (self.height and got[1] != self.height):
                # Webcams snap to their nearest mode: say so rather than fail a pilot.
                log.warning(
                    "USB camera %d: asked for %dx%d, delivers %dx%d",
                    self.index,
                    self.width,
                    self.height,
                    *got,
                )
            self._cap = cap
            self._frame_id = 0

    def close(self) -> None:
        """Release the webcam; safe to call twice."""
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def frames(self) -> Generator[Frame, None, None]:
        """Yield frames until closed; CameraError when the webcam stops delivering."""
        self.open()
        failures = 0
        while True:
            cap = self._cap
            if cap is None:
                return  # closed by another thread
            ok, bgr = cap.read()
            if self._cap is None:
                return
            if not ok or bgr is None:
                failures += 1
                if failures >= _FAILED_READS_FOR_LOSS:
                    self.close()
                    raise CameraError(
                        f"USB camera {self.index} stopped delivering frames "
                        f"({failures} failed reads in a row): unplugged?"
                    )
                time.sleep(0.05)
                continue
            failures = 0
            frame = Frame(
                image=self._to_rgb(bgr),
                timestamp=time.time(),
                frame_id=self._frame_id,
                source=f"uvc:{self.index}",
            )
            self._frame_id += 1
            yield frame

    def info(self) -> CameraInfo:
        """Describe the webcam (size and rate as the driver reports them)."""
        extra = {"index": str(self.index)}
        fps = None
        cap = self._cap
        if cap is not None:
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            extra["size"] = f"{w}x{h}"
            fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
            with contextlib.suppress(cv2.error, AttributeError):  # older OpenCV builds
                extra["backend"] = str(cap.getBackendName())
        return CameraInfo(
            kind=self.kind, model="USB camera", serial=str(self.index), fps=fps, extra=extra
        )

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        if bgr.ndim == 3 and bgr.shape[2] == 3:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        elif bgr.ndim == 3 and bgr.shape[2] == 4:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
        try:
            return to_engine_image(bgr, f"USB camera {self.index}")
        except ImageError as exc:
            raise CameraError(str(exc)) from None
