"""Cameras: GenICam through harvesters, folder/video replay, USB webcams."""

from station.camera.base import Camera, CameraError, CameraInfo, Frame

__all__ = ["Camera", "CameraError", "CameraInfo", "Frame"]
