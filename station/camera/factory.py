"""Build the camera a configuration names: replay (default), GenICam or a USB webcam."""

from __future__ import annotations

import logging
from pathlib import Path

from station.camera.base import Camera
from station.camera.genicam import GenICamCamera
from station.camera.replay import ReplayCamera
from station.camera.uvc import UVCCamera
from station.config import CameraConfig, StationConfig
from station.config import data_dir as default_data_dir
from station.core.errors import CameraError, StationError

__all__ = ["DEMO_PRODUCT_DIR", "demo_product_path", "open_camera"]

log = logging.getLogger(__name__)

DEMO_PRODUCT_DIR = "demo_product"


def demo_product_path(data_dir: Path | None = None) -> Path:
    """The demo product's folder, written on first use if it is missing or empty."""
    root = (data_dir or default_data_dir(StationConfig())) / DEMO_PRODUCT_DIR
    if root.is_dir() and any(root.iterdir()):
        return root
    try:
        # Imported here: the replay camera must not pull the generator in for real folders.
        from station.demo_product import generate_demo_product
    except ImportError as exc:
        raise CameraError(
            f"camera.replay.path is empty and the demo product at {root} is missing, but the "
            f"demo product generator (station.demo_product) is not available: {exc}"
        ) from None
    log.info("writing the demo product to %s (first start)", root)
    try:
        generate_demo_product(root)
    except StationError as exc:
        raise CameraError(f"cannot write the demo product to {root}: {exc}") from None
    return root


def open_camera(
    cfg: CameraConfig, *, data_dir: Path | None = None, device: str | None = None
) -> Camera:
    """Build the configured camera, not yet opened: call open(), use `with`, or iterate frames().

    `device` overrides the configured device: a GenICam serial / user name / index, a USB
    camera index, or a replay folder or video. An empty replay path means the demo product in
    `data_dir` (created on first use).
    """
    if cfg.source == "genicam":
        return GenICamCamera(cfg.genicam, device=device)
    if cfg.source == "uvc":
        return UVCCamera.from_config(cfg.uvc, device)
    if cfg.source == "replay":
        path = device or cfg.replay.path
        if not path:
            return ReplayCamera.from_config(cfg.replay, demo_product_path(data_dir))
        return ReplayCamera.from_config(cfg.replay, path)
    raise CameraError(f"camera.source: '{cfg.source}' is not one of replay, genicam, uvc")
