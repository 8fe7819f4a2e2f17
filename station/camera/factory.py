"""Build the camera a configuration names: replay (default), GenICam or a USB webcam."""

from __future__ import annotations

import logging
from pathlib import Path

from station.camera.base import Camera
from station.camera.genicam import GenICamCamera
from station.camera.replay import ReplayCamera
from station.camera.uvc import UVCCamera
from station.config import CameraConfig
from station.core.errors import CameraError

__all__ = ["open_camera"]

log = logging.getLogger(__name__)


def open_camera(
    cfg: CameraConfig, *, device: str | None = None, replay_default: Path | None = None
) -> Camera:
    """Build the configured camera, not yet opened: call open(), use `with`, or iterate frames().

    `device` overrides the configured device: a GenICam serial / user name / index, a USB
    camera index, or a replay folder or video. An empty replay path means `replay_default`
    (the app passes the demo product it has made sure of).
    """
    if cfg.source == "genicam":
        return GenICamCamera(cfg.genicam, device=device)
    if cfg.source == "uvc":
        return UVCCamera.from_config(cfg.uvc, device)
    if cfg.source == "replay":
        path = device or cfg.replay.path or replay_default
        if not path:
            raise CameraError(
                "camera.replay.path is empty: name a folder or video of parts to replay"
            )
        return ReplayCamera.from_config(cfg.replay, path, max_megapixels=cfg.max_megapixels)
    raise CameraError(f"camera.source: '{cfg.source}' is not one of replay, genicam, uvc")
