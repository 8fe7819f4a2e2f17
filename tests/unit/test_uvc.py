"""UVCCamera with a stand-in for cv2.VideoCapture (no webcam on CI): RGB order, size, unplug."""

from __future__ import annotations

import itertools
from typing import Any

import cv2
import numpy as np
import pytest

from station.camera import Camera, UVCCamera
from station.core.errors import CameraError


class FakeCapture:
    """Delivers `good` BGR frames, then fails every read (an unplugged webcam)."""

    def __init__(self, index: int, *, opened: bool = True, good: int = 1000) -> None:
        self.index = index
        self.opened = opened
        self.good = good
        self.reads = 0
        self.props: dict[int, float] = {
            cv2.CAP_PROP_FRAME_WIDTH: 64,
            cv2.CAP_PROP_FRAME_HEIGHT: 48,
            cv2.CAP_PROP_FPS: 30,
        }
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def read(self) -> tuple[bool, Any]:
        self.reads += 1
        if self.reads > self.good:
            return False, None
        h, w = int(self.props[cv2.CAP_PROP_FRAME_HEIGHT]), int(self.props[cv2.CAP_PROP_FRAME_WIDTH])
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 0] = 200  # blue in OpenCV's BGR
        return True, frame

    def getBackendName(self) -> str:
        return "FAKE"

    def release(self) -> None:
        self.released = True


def test_frames_are_rgb_with_the_configured_size() -> None:
    caps: list[FakeCapture] = []

    def factory(i: int) -> FakeCapture:
        caps.append(FakeCapture(i))
        return caps[-1]

    cam = UVCCamera(1, width=80, height=60, capture_factory=factory)
    assert isinstance(cam, Camera)
    with cam:
        frames = list(itertools.islice(cam.frames(), 3))
        info = cam.info()
    assert caps[0].index == 1 and caps[0].released
    assert frames[0].image.shape == (60, 80, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].image[0, 0].tolist() == [0, 0, 200]  # blue ends up last in RGB
    assert [f.frame_id for f in frames] == [0, 1, 2] and frames[0].source == "uvc:1"
    assert info.kind == "uvc" and info.fps == 30 and info.extra["size"] == "80x60"


def test_missing_webcam_is_a_clear_error() -> None:
    cam = UVCCamera(5, capture_factory=lambda i: FakeCapture(i, opened=False))
    with pytest.raises(CameraError, match="no USB camera at index 5"):
        cam.open()


def test_unplug_raises_and_reopen_works() -> None:
    good = [2]

    def factory(i: int) -> FakeCapture:
        return FakeCapture(i, good=good[0])

    cam = UVCCamera(0, capture_factory=factory)
    it = cam.frames()
    next(it)
    next(it)
    with pytest.raises(CameraError, match="stopped delivering frames"):
        next(it)
    good[0] = 100  # plugged back in
    cam.open()
    assert next(iter(cam.frames())).image.shape == (48, 64, 3)
    cam.close()
    cam.close()  # twice is fine
