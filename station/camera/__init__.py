"""Cameras: GenICam through harvesters, folder/video replay, USB webcams."""

from station.camera.base import Camera, CameraError, CameraInfo
from station.camera.factory import open_camera
from station.camera.genicam import AcquisitionStats, GenICamCamera, discover
from station.camera.replay import ReplayCamera
from station.camera.uvc import UVCCamera

__all__ = [
    "AcquisitionStats",
    "Camera",
    "CameraError",
    "CameraInfo",
    "GenICamCamera",
    "ReplayCamera",
    "UVCCamera",
    "discover",
    "open_camera",
]
